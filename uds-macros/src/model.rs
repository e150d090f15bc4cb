//! Parse and validate: from the attribute and the trait to a [`Service`],
//! collecting every mistake as a spanned `syn::Error`.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{
    Attribute, Expr, ExprLit, FnArg, GenericArgument, Ident, ItemTrait, Lit, Meta, MetaNameValue,
    Pat, PathArguments, ReturnType, Token, TraitItem, Type,
};

/// Names the generated client defines itself; a trait method may not take one.
pub(crate) const CLIENT_RESERVED: &[&str] = &["new", "from_conn", "connect", "with_options", "rpc"];

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Json,
    Proto,
}

pub(crate) struct Service {
    pub(crate) codec: Codec,
    pub(crate) krate: syn::Path,
    pub(crate) methods: Vec<Method>,
}

pub(crate) struct Method {
    pub(crate) ident: Ident,
    pub(crate) wire_name: String,
    pub(crate) has_ctx: bool,
    pub(crate) args: Vec<(Ident, Type)>,
    pub(crate) ret: Ret,
    pub(crate) docs: Vec<Attribute>,
}

pub(crate) enum Ret {
    Unit,
    Plain(Box<Type>),
    Result(Box<Type>, Box<Type>),
    Stream(Box<Type>),
}

/// Accumulates errors so that one pass reports all of them.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, span: impl ToTokens, msg: impl std::fmt::Display) {
        let e = syn::Error::new_spanned(span, msg);
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    /// How many errors so far.
    pub(crate) fn count(&self) -> usize {
        self.0.as_ref().map_or(0, |e| e.into_iter().count())
    }

    fn push_error(&mut self, e: syn::Error) {
        match &mut self.0 {
            Some(all) => all.combine(e),
            None => self.0 = Some(e),
        }
    }

    pub(crate) fn finish(self) -> Result<(), syn::Error> {
        self.0.map_or(Ok(()), Err)
    }
}

/// Parses `#[uds::service(...)]` arguments and the trait. Returns the trait
/// with `#[uds(...)]` attributes removed (always), and the service model or
/// every error found.
pub(crate) fn parse(
    args: TokenStream,
    mut item: ItemTrait,
) -> (ItemTrait, Result<Service, syn::Error>) {
    let mut errors = Errors::default();
    let (codec, krate) = parse_args(args, &mut errors);
    check_trait_shape(&item, &mut errors);

    let mut methods = Vec::new();
    for trait_item in &mut item.items {
        let TraitItem::Fn(f) = trait_item else {
            errors.push(
                &*trait_item,
                "a `#[uds::service]` trait may only contain methods",
            );
            continue;
        };
        let wire_override = take_method_attrs(&mut f.attrs, &mut errors);
        if let Some(m) = parse_method(f, codec, wire_override, &item.ident, &mut errors) {
            methods.push(m);
        }
    }
    check_wire_names(&methods, &mut errors);
    let result = errors.finish().map(|()| Service {
        codec,
        krate,
        methods,
    });
    (item, result)
}

fn parse_args(args: TokenStream, errors: &mut Errors) -> (Codec, syn::Path) {
    let mut codec = Codec::Json;
    let mut krate: syn::Path = syn::parse_quote!(::uds);
    let parsed = syn::parse::Parser::parse2(
        Punctuated::<MetaNameValue, Token![,]>::parse_terminated,
        args,
    );
    let list = match parsed {
        Ok(list) => list,
        Err(e) => {
            errors.push_error(syn::Error::new(
                e.span(),
                "expected `codec = \"json\"`, `codec = \"proto\"` or `crate = \"path\"`",
            ));
            return (codec, krate);
        }
    };
    for nv in list {
        let key = nv.path.get_ident().map(ToString::to_string);
        let Some(value) = string_value(&nv.value) else {
            errors.push(&nv.value, "expected a string literal");
            continue;
        };
        match key.as_deref() {
            Some("codec") => match value.as_str() {
                "json" => codec = Codec::Json,
                "proto" => codec = Codec::Proto,
                other => errors.push(
                    &nv.value,
                    format!("unknown codec `{other}`: expected \"json\" or \"proto\""),
                ),
            },
            Some("crate") => match syn::parse_str::<syn::Path>(&value) {
                Ok(p) => krate = p,
                Err(_) => errors.push(&nv.value, "expected a path to the uds crate"),
            },
            _ => errors.push(
                &nv.path,
                "unknown attribute key: expected `codec` or `crate`",
            ),
        }
    }
    (codec, krate)
}

fn string_value(e: &Expr) -> Option<String> {
    match e {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Some(s.value()),
        _ => None,
    }
}

fn check_trait_shape(item: &ItemTrait, errors: &mut Errors) {
    if !item.generics.params.is_empty() || item.generics.where_clause.is_some() {
        errors.push(
            &item.generics,
            "generic service traits are not supported: the types on the wire must be concrete",
        );
    }
    if item.colon_token.is_some() {
        errors.push(
            &item.supertraits,
            "supertraits are not supported on a `#[uds::service]` trait",
        );
    }
    if let Some(u) = &item.unsafety {
        errors.push(u, "a service trait cannot be `unsafe`");
    }
    if let Some(a) = &item.auto_token {
        errors.push(a, "a service trait cannot be `auto`");
    }
}

/// Removes `#[uds(...)]` from a method, returning its `name = "..."`.
fn take_method_attrs(attrs: &mut Vec<Attribute>, errors: &mut Errors) -> Option<(String, Span)> {
    let mut name = None;
    attrs.retain(|attr| {
        if !attr.path().is_ident("uds") {
            return true;
        }
        let Meta::List(list) = &attr.meta else {
            errors.push(attr, "expected `#[uds(name = \"/wire/name\")]`");
            return false;
        };
        let parsed = syn::parse::Parser::parse2(
            Punctuated::<MetaNameValue, Token![,]>::parse_terminated,
            list.tokens.clone(),
        );
        match parsed {
            Ok(items) => {
                for nv in items {
                    if !nv.path.is_ident("name") {
                        errors.push(&nv.path, "unknown attribute key: expected `name`");
                        continue;
                    }
                    match string_value(&nv.value) {
                        Some(v) if !v.is_empty() => name = Some((v, nv.value.span())),
                        _ => errors.push(&nv.value, "expected a non-empty string literal"),
                    }
                }
            }
            Err(e) => errors.push_error(e),
        }
        false
    });
    name
}

fn parse_method(
    f: &syn::TraitItemFn,
    codec: Codec,
    wire_override: Option<(String, Span)>,
    trait_ident: &Ident,
    errors: &mut Errors,
) -> Option<Method> {
    let sig = &f.sig;
    let mut ok = check_signature(f, trait_ident, errors);
    let (has_ctx, args) = parse_args_of(sig, codec, &mut ok, errors);
    let ret = parse_return(&sig.output, &mut ok, errors);
    if !ok {
        return None;
    }
    let wire_name =
        wire_override.map_or_else(|| format!("/{trait_ident}/{}", sig.ident), |(name, _)| name);
    Some(Method {
        ident: sig.ident.clone(),
        wire_name,
        has_ctx,
        args,
        ret,
        docs: f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
    })
}

/// Qualifiers, generics, body, name and receiver. Returns whether all hold.
fn check_signature(f: &syn::TraitItemFn, trait_ident: &Ident, errors: &mut Errors) -> bool {
    let sig = &f.sig;
    let before = errors.count();
    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token,
            "methods of a `#[uds::service]` trait must be `async fn`",
        );
    }
    if let Some(c) = &sig.constness {
        errors.push(c, "a service method cannot be `const`");
    }
    if let Some(u) = &sig.unsafety {
        errors.push(u, "a service method cannot be `unsafe`");
    }
    if let Some(a) = &sig.abi {
        errors.push(a, "a service method cannot have an ABI");
    }
    if let Some(v) = &sig.variadic {
        errors.push(v, "a service method cannot be variadic");
    }
    if !sig.generics.params.is_empty() || sig.generics.where_clause.is_some() {
        errors.push(
            &sig.generics,
            "generic methods cannot be served: the types on the wire must be concrete",
        );
    }
    if let Some(body) = &f.default {
        errors.push(
            body,
            "service methods cannot have a default body: implement them in the `impl`",
        );
    }
    if CLIENT_RESERVED.contains(&sig.ident.to_string().as_str()) {
        errors.push(
            &sig.ident,
            format!(
                "method name `{}` clashes with a method of the generated `{}Client`; rename it (`#[uds(name = \"...\")]` keeps any wire name)",
                sig.ident, trait_ident
            ),
        );
    }
    match sig.inputs.first() {
        Some(FnArg::Receiver(r)) => {
            if r.reference.is_none() || r.colon_token.is_some() {
                errors.push(
                    r,
                    "take `&self`: a service handles calls through a shared reference",
                );
            } else if r.mutability.is_some() {
                errors.push(
                    r,
                    "take `&self`, not `&mut self`: calls run concurrently; use interior mutability",
                );
            }
        }
        _ => errors.push(&sig.ident, "a service method needs a `&self` receiver"),
    }
    errors.count() == before
}

/// The optional `&Context` and the wire arguments.
fn parse_args_of(
    sig: &syn::Signature,
    codec: Codec,
    ok: &mut bool,
    errors: &mut Errors,
) -> (bool, Vec<(Ident, Type)>) {
    let before = errors.count();
    let mut has_ctx = false;
    let mut args = Vec::new();
    let typed = sig.inputs.iter().filter_map(|a| match a {
        FnArg::Typed(pt) => Some(pt),
        FnArg::Receiver(_) => None,
    });
    for (i, pt) in typed.enumerate() {
        let ty = &*pt.ty;
        let name = match &*pt.pat {
            Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => pi.ident.clone(),
            pat => {
                errors.push(
                    pat,
                    "use a plain argument name: it names the argument on the wire",
                );
                continue;
            }
        };
        match ty {
            Type::Reference(r) if is_context(&r.elem) && r.mutability.is_none() => {
                if i == 0 {
                    has_ctx = true;
                } else {
                    errors.push(ty, "the `&Context` argument must come first, right after `&self`");
                }
            }
            Type::Reference(_) => errors.push(
                ty,
                "arguments are sent to another process by value: take an owned type instead of a reference",
            ),
            Type::ImplTrait(_) => {
                errors.push(ty, "`impl Trait` arguments cannot be decoded: name a concrete type");
            }
            _ => args.push((name, ty.clone())),
        }
    }
    if codec == Codec::Proto {
        for (_, ty) in args.iter().skip(1) {
            errors.push(
                ty,
                "a method of a proto service takes at most one argument, a `prost::Message`: wrap them in one message",
            );
        }
    }
    *ok &= errors.count() == before;
    (has_ctx, args)
}

fn parse_return(output: &ReturnType, ok: &mut bool, errors: &mut Errors) -> Ret {
    match output {
        ReturnType::Default => Ret::Unit,
        ReturnType::Type(_, ty) => match &**ty {
            Type::ImplTrait(_) => {
                errors.push(
                    ty,
                    "`impl Trait` results cannot be encoded: name a concrete type (for a stream, `uds::ServerStream<T>`)",
                );
                *ok = false;
                Ret::Unit
            }
            Type::Tuple(t) if t.elems.is_empty() => Ret::Unit,
            ty => classify_return(ty),
        },
    }
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        _ => None,
    }
}

fn is_context(ty: &Type) -> bool {
    last_segment(ty).is_some_and(|s| s.ident == "Context" && s.arguments.is_none())
}

fn type_args(seg: &syn::PathSegment) -> Vec<Type> {
    match &seg.arguments {
        PathArguments::AngleBracketed(a) => a
            .args
            .iter()
            .filter_map(|g| match g {
                GenericArgument::Type(t) => Some(t.clone()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

fn classify_return(ty: &Type) -> Ret {
    if let Some(seg) = last_segment(ty) {
        let targs = type_args(seg);
        if seg.ident == "Result" && targs.len() == 2 {
            return Ret::Result(Box::new(targs[0].clone()), Box::new(targs[1].clone()));
        }
        if seg.ident == "ServerStream" && targs.len() == 1 {
            return Ret::Stream(Box::new(targs[0].clone()));
        }
    }
    Ret::Plain(Box::new(ty.clone()))
}

fn check_wire_names(methods: &[Method], errors: &mut Errors) {
    for (i, m) in methods.iter().enumerate() {
        if let Some(first) = methods[..i].iter().find(|o| o.wire_name == m.wire_name) {
            errors.push(
                &m.ident,
                format!(
                    "wire name `{}` is already used by method `{}`: set another with `#[uds(name = \"...\")]`",
                    m.wire_name, first.ident
                ),
            );
        }
    }
}
