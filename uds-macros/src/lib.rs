//! Procedural macros for [`uds`](https://docs.rs/uds): `#[uds::service]`.
//!
//! Depend on `uds` and use the macro through its re-export; this crate is an
//! implementation detail. The macro is built like `serde_derive` and
//! `thiserror-impl`: parse and validate the trait into a model, collecting
//! every mistake as a spanned error, then expand with one generator per
//! emitted item. It never panics on user input, and on errors it re-emits
//! the trait unchanged (minus its `#[uds]` attributes) so that an
//! implementation of it does not cascade into more errors.
//!
//! See `uds::service` for the documentation and an example.

mod expand;
mod model;

use proc_macro::TokenStream;

/// Turns a trait into an RPC service: a typed client, `{Trait}Client`, and a
/// server, `{Trait}Server`. See `uds::service` for the documentation.
#[proc_macro_attribute]
pub fn service(args: TokenStream, input: TokenStream) -> TokenStream {
    let Ok(item) = syn::parse::<syn::ItemTrait>(input.clone()) else {
        let err = not_a_trait(input.clone()).to_compile_error();
        let mut out: TokenStream = err.into();
        out.extend(input);
        return out;
    };
    let (item, model) = model::parse(args.into(), item);
    match model {
        Ok(service) => expand::expand(&item, &service).into(),
        Err(errors) => {
            let errors = errors.to_compile_error();
            quote::quote!(#item #errors).into()
        }
    }
}

/// The error for an item that is not a trait: on its keyword when it parses
/// as an item, naming what it is.
fn not_a_trait(input: TokenStream) -> syn::Error {
    use quote::ToTokens;
    let what = |kind: &str, span: &dyn ToTokens| {
        syn::Error::new_spanned(
            span,
            format!(
                "`#[uds::service]` goes on a trait, not on {kind}: declare the service as `pub trait Name {{ async fn method(&self, ...) -> T; }}`"
            ),
        )
    };
    match syn::parse::<syn::Item>(input) {
        Ok(syn::Item::Struct(s)) => what("a struct", &s.struct_token),
        Ok(syn::Item::Enum(e)) => what("an enum", &e.enum_token),
        Ok(syn::Item::Impl(i)) => syn::Error::new_spanned(
            i.impl_token,
            "`#[uds::service]` goes on the trait, not on its impl: move the attribute to the trait declaration",
        ),
        Ok(syn::Item::Fn(f)) => what("a function", &f.sig.fn_token),
        Ok(syn::Item::Mod(m)) => what("a module", &m.mod_token),
        _ => syn::Error::new(
            proc_macro2::Span::call_site(),
            "`#[uds::service]` goes on a trait",
        ),
    }
}
