//! Parse and validate: from the attribute and the trait to a [`Service`],
//! collecting every mistake as a spanned `syn::Error` on the token the user
//! wrote, saying what to write instead.

use proc_macro2::{Span, TokenStream};
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::spanned::Spanned;
use syn::{
    Attribute, FnArg, GenericArgument, Ident, ItemTrait, LitInt, LitStr, Pat, PathArguments,
    ReturnType, Token, TraitItem, Type, TypeParamBound,
};

/// Names the generated client defines itself, or takes from the traits it
/// implements (`Clone`, `Debug`, `PluginClient`): a trait method named like
/// one would shadow it (`client.clone()` would become a call).
pub(crate) const CLIENT_RESERVED: &[&str] = &[
    "new",
    "from_conn",
    "connect",
    "with_options",
    "with_timeout",
    "options",
    "rpc",
    "clone",
    "clone_from",
    "fmt",
    "from_rpc",
];

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Codec {
    Json,
    Proto,
}

pub(crate) struct Service {
    pub(crate) codec: Codec,
    pub(crate) krate: syn::Path,
    /// The trait's authorization rule (every method's first check).
    pub(crate) access: Option<Access>,
    pub(crate) methods: Vec<Method>,
}

/// One authorization rule: the caller passes if it matches any of the
/// allowed identities (when some are listed) and the policy function (when
/// one is given) returns `true`.
#[derive(Default)]
pub(crate) struct Access {
    pub(crate) same_user: bool,
    pub(crate) uids: Vec<LitInt>,
    pub(crate) gids: Vec<LitInt>,
    pub(crate) policy: Option<syn::Path>,
    /// `allow` was given (a second one is an error, not a silent union).
    allow_given: bool,
}

pub(crate) struct Method {
    pub(crate) ident: Ident,
    pub(crate) wire_name: String,
    /// The context argument's type as written (`&uds::Context`).
    pub(crate) ctx: Option<Type>,
    pub(crate) args: Vec<Arg>,
    /// The client stream, `items: uds::Streaming<T>` (always the last
    /// argument): its name and item type `T`.
    pub(crate) stream_arg: Option<(Ident, Type)>,
    pub(crate) ret: Ret,
    pub(crate) docs: Vec<Attribute>,
    /// `#[cfg]`/`#[cfg_attr]`: carried to every generated item of the method.
    pub(crate) cfgs: Vec<Attribute>,
    /// `#[deprecated]`: carried to the client's method.
    pub(crate) deprecated: Vec<Attribute>,
    pub(crate) access: Option<Access>,
}

/// One data argument.
pub(crate) struct Arg {
    pub(crate) ident: Ident,
    pub(crate) ty: Type,
    /// `#[uds(default)]`: a missing JSON key is `None`.
    pub(crate) default: bool,
}

/// What a method returns, classified.
pub(crate) enum Ret {
    Unit,
    Plain(Box<Type>),
    Result(Box<Type>, Box<Type>),
    Stream(Box<Type>),
    /// `ServerStream<Result<T, E>>`: an `Err` item ends the stream with an
    /// application error.
    FallibleStream(Box<Type>, Box<Type>),
}

/// Accumulates errors so that one pass reports all of them.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, span: impl ToTokens, msg: impl std::fmt::Display) {
        self.push_error(syn::Error::new_spanned(span, msg));
    }

    pub(crate) fn push_at(&mut self, span: Span, msg: impl std::fmt::Display) {
        self.push_error(syn::Error::new(span, msg));
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
    let (codec, krate, access) = parse_service_args(args, &mut errors);
    take_trait_attrs(&mut item.attrs, &mut errors);
    check_trait_shape(&item, &mut errors);
    let generated = [
        format!("{}Client", item.ident),
        format!("{}Server", item.ident),
    ];

    let mut methods = Vec::new();
    for trait_item in &mut item.items {
        let TraitItem::Fn(f) = trait_item else {
            errors.push(
                &*trait_item,
                "a `#[uds::service]` trait may only contain methods: move this item out of the trait",
            );
            continue;
        };
        let attrs = take_method_attrs(&mut f.attrs, &mut errors);
        let arg_attrs = take_arg_attrs(&mut f.sig, &mut errors);
        if let Some(m) = parse_method(f, codec, attrs, &arg_attrs, &item.ident, &mut errors) {
            methods.push(m);
        }
        // The trait is re-emitted even on errors: keep rustc's own errors
        // about patterns in bodiless functions from doubling ours.
        for input in &mut f.sig.inputs {
            if let FnArg::Typed(pt) = input {
                match &mut *pt.pat {
                    Pat::Ident(pi) => pi.mutability = None,
                    Pat::Wild(_) => {}
                    other => *other = syn::parse_quote!(_),
                }
            }
        }
    }
    for m in &methods {
        for a in &m.args {
            check_generated_names(&a.ty, &generated, &mut errors);
        }
        if let Some((_, t)) = &m.stream_arg {
            check_generated_names(t, &generated, &mut errors);
        }
        match &m.ret {
            Ret::Unit => {}
            Ret::Plain(t) | Ret::Stream(t) => check_generated_names(t, &generated, &mut errors),
            Ret::Result(t, e) | Ret::FallibleStream(t, e) => {
                check_generated_names(t, &generated, &mut errors);
                check_generated_names(e, &generated, &mut errors);
            }
        }
    }
    check_wire_names(&methods, &mut errors);
    let result = errors.finish().map(|()| Service {
        codec,
        krate,
        access,
        methods,
    });
    (item, result)
}

/// Sets `slot` once; a second value is an error on its key, as
/// `serde_derive`'s `Attr::set` does.
fn set_once<T>(slot: &mut Option<T>, value: T, key: &syn::Path, errors: &mut Errors) {
    if slot.is_some() {
        errors.push(
            key,
            format!(
                "duplicate `{}`: give it once",
                key.to_token_stream().to_string().replace(' ', "")
            ),
        );
    } else {
        *slot = Some(value);
    }
}

/// The string of `key = "..."`, with an error on the key if the value is
/// missing.
fn string_value(meta: &ParseNestedMeta<'_>, example: &str) -> syn::Result<LitStr> {
    if !meta.input.peek(Token![=]) {
        return Err(syn::Error::new_spanned(
            &meta.path,
            format!("`{example}`: this key needs a value"),
        ));
    }
    let value = meta.value()?;
    value.parse::<LitStr>().map_err(|e| {
        syn::Error::new(
            e.span(),
            format!("expected a string literal, as in `{example}`"),
        )
    })
}

fn parse_service_args(
    args: TokenStream,
    errors: &mut Errors,
) -> (Codec, syn::Path, Option<Access>) {
    let mut codec = None;
    let mut krate = None;
    let mut access = Access::default();
    let mut seen_access = false;
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("codec") {
            let lit = string_value(&meta, "codec = \"json\"")?;
            let c = match lit.value().as_str() {
                "json" => Codec::Json,
                "proto" => Codec::Proto,
                other => {
                    return Err(syn::Error::new(
                        lit.span(),
                        format!("unknown codec `{other}`: expected \"json\" or \"proto\""),
                    ));
                }
            };
            set_once(&mut codec, c, &meta.path, errors);
            Ok(())
        } else if meta.path.is_ident("crate") {
            let lit = string_value(&meta, "crate = \"uds\"")?;
            let path = lit.parse::<syn::Path>().map_err(|_| {
                syn::Error::new(
                    lit.span(),
                    "expected a path to the uds crate, e.g. \"::uds\"",
                )
            })?;
            set_once(&mut krate, path, &meta.path, errors);
            Ok(())
        } else if meta.path.is_ident("allow") || meta.path.is_ident("policy") {
            seen_access = true;
            parse_access_key(&meta, &mut access, errors)
        } else if meta.path.is_ident("name") || meta.path.is_ident("default") {
            Err(meta.error(
                "this option goes on a method (`name`) or an argument (`default`): `#[uds(...)]`",
            ))
        } else {
            Err(meta.error(
                "unknown option: expected `codec = \"json\" | \"proto\"`, `crate = \"path\"`, `allow(...)` or `policy = path`",
            ))
        }
    });
    if let Err(e) = syn::parse::Parser::parse2(parser, args) {
        errors.push_error(e);
    }
    let krate = krate.unwrap_or_else(|| syn::parse_quote!(::uds));
    (
        codec.unwrap_or(Codec::Json),
        krate,
        seen_access.then_some(access),
    )
}

/// `allow = "same_user"`, `allow(same_user, uid = 1, uid = [1, 2], gid = 3)`
/// or `policy = path::to::fn`.
fn parse_access_key(
    meta: &ParseNestedMeta<'_>,
    access: &mut Access,
    errors: &mut Errors,
) -> syn::Result<()> {
    if meta.path.is_ident("policy") {
        if !meta.input.peek(Token![=]) {
            return Err(syn::Error::new_spanned(
                &meta.path,
                "`policy = my_policy`: name a `fn(&uds::Cred) -> bool`",
            ));
        }
        let path: syn::Path = meta.value()?.parse().map_err(|e| {
            syn::Error::new(
                e.span(),
                "expected the path of a `fn(&uds::Cred) -> bool`, as in `policy = my_policy`",
            )
        })?;
        set_once(&mut access.policy, path, &meta.path, errors);
        return Ok(());
    }
    if access.allow_given {
        return Err(syn::Error::new_spanned(
            &meta.path,
            "duplicate `allow`: list every allowed identity in one `allow(...)`",
        ));
    }
    access.allow_given = true;
    if meta.input.peek(Token![=]) {
        let lit: LitStr = meta.value()?.parse().map_err(|e| {
            syn::Error::new(e.span(), "expected `allow = \"same_user\"` or `allow(...)`")
        })?;
        if lit.value() == "same_user" {
            access.same_user = true;
            return Ok(());
        }
        return Err(syn::Error::new(
            lit.span(),
            "unknown rule: expected `allow = \"same_user\"`, or `allow(uid = 1000, gid = 4242, same_user)`",
        ));
    }
    let content;
    syn::parenthesized!(content in meta.input);
    if content.is_empty() {
        return Err(syn::Error::new_spanned(
            &meta.path,
            "`allow()` allows nobody: list `same_user`, `uid = ...` or `gid = ...`",
        ));
    }
    let tokens: TokenStream = content.parse()?;
    let rules = syn::meta::parser(|inner| {
        if inner.path.is_ident("same_user") {
            access.same_user = true;
            Ok(())
        } else if inner.path.is_ident("uid") || inner.path.is_ident("gid") {
            if !inner.input.peek(Token![=]) {
                return Err(syn::Error::new_spanned(
                    &inner.path,
                    "give the ids: `uid = 1000` or `uid = [1000, 1001]`",
                ));
            }
            let ids = parse_ids(inner.value()?)?;
            if inner.path.is_ident("uid") {
                access.uids.extend(ids);
            } else {
                access.gids.extend(ids);
            }
            Ok(())
        } else {
            Err(inner.error(
                "unknown rule: expected `same_user`, `uid = ...` or `gid = ...` (or `policy = path` next to `allow`)",
            ))
        }
    });
    syn::parse::Parser::parse2(rules, tokens)
}

/// `1000` or `[1000, 1001]`: literal integers, checked to fit a `u32`.
fn parse_ids(input: syn::parse::ParseStream<'_>) -> syn::Result<Vec<LitInt>> {
    let ids: Vec<LitInt> = if input.peek(syn::token::Bracket) {
        let content;
        syn::bracketed!(content in input);
        content
            .parse_terminated(LitInt::parse_id, Token![,])?
            .into_iter()
            .collect()
    } else {
        vec![LitInt::parse_id(input)?]
    };
    if ids.is_empty() {
        return Err(input.error("the list of ids is empty: it would allow nobody"));
    }
    Ok(ids)
}

trait ParseId: Sized {
    fn parse_id(input: syn::parse::ParseStream<'_>) -> syn::Result<Self>;
}

impl ParseId for LitInt {
    fn parse_id(input: syn::parse::ParseStream<'_>) -> syn::Result<Self> {
        let lit: LitInt = input
            .parse()
            .map_err(|e| syn::Error::new(e.span(), "expected a numeric uid or gid, e.g. `1000`"))?;
        if lit.base10_parse::<u32>().is_err() {
            return Err(syn::Error::new(
                lit.span(),
                "not a uid or gid: ids are integers from 0 to 4294967295",
            ));
        }
        if !lit.suffix().is_empty() && lit.suffix() != "u32" {
            return Err(syn::Error::new(
                lit.span(),
                "ids are `u32`: drop the suffix",
            ));
        }
        // A fresh literal: validated here, and not the user's token (lints
        // such as `unreadable_literal` are about what they wrote, not this).
        Ok(LitInt::new(
            &format!("{}u32", lit.base10_digits()),
            Span::call_site(),
        ))
    }
}

/// `#[uds(...)]` on the trait itself, and `#[uds::service]` applied twice.
fn take_trait_attrs(attrs: &mut Vec<Attribute>, errors: &mut Errors) {
    attrs.retain(|attr| {
        let path = attr.path();
        if path.is_ident("uds") {
            errors.push(
                attr,
                "options of the whole service go in the macro's arguments: `#[uds::service(allow(...), codec = \"...\")]`",
            );
            return false;
        }
        let last = path.segments.last().map(|s| s.ident.to_string());
        if last.as_deref() == Some("service")
            && (path.segments.len() == 1 || path.segments.first().is_some_and(|s| s.ident == "uds"))
        {
            errors.push(
                attr,
                "`#[uds::service]` is applied twice: remove this one",
            );
            return false;
        }
        true
    });
}

fn check_trait_shape(item: &ItemTrait, errors: &mut Errors) {
    if !item.generics.params.is_empty() {
        errors.push(
            &item.generics.params,
            "generic service traits are not supported: the types on the wire must be concrete; name them in the methods",
        );
    }
    if let Some(w) = &item.generics.where_clause {
        errors.push(
            w,
            "a service trait cannot have a `where` clause: the types on the wire are concrete, and `Send + Sync` need not be asked for (the server requires them)",
        );
    }
    for bound in &item.supertraits {
        let ok = match bound {
            TypeParamBound::Trait(t) => {
                t.path.segments.last().is_some_and(|s| {
                    (s.ident == "Send" || s.ident == "Sync") && s.arguments.is_none()
                }) && matches!(t.modifier, syn::TraitBoundModifier::None)
                    && t.lifetimes.is_none()
            }
            TypeParamBound::Lifetime(l) => l.ident == "static",
            _ => false,
        };
        if !ok {
            errors.push(
                bound,
                "a service trait may only have `Send`, `Sync` and `'static` as supertraits: the generated client cannot implement other traits",
            );
        }
    }
    if let Some(u) = &item.unsafety {
        errors.push(u, "a service trait cannot be `unsafe`: remove `unsafe`");
    }
    if let Some(a) = &item.auto_token {
        errors.push(a, "a service trait cannot be `auto`: remove `auto`");
    }
}

/// What `#[uds(...)]` on a method says, and the attributes carried over.
#[derive(Default)]
struct MethodAttrs {
    name: Option<LitStr>,
    access: Option<Access>,
    cfgs: Vec<Attribute>,
    deprecated: Vec<Attribute>,
}

/// Removes `#[uds(...)]` from a method.
fn take_method_attrs(attrs: &mut Vec<Attribute>, errors: &mut Errors) -> MethodAttrs {
    let mut out = MethodAttrs::default();
    let mut access = Access::default();
    let mut seen_access = false;
    attrs.retain(|attr| {
        if attr.path().is_ident("cfg") || attr.path().is_ident("cfg_attr") {
            out.cfgs.push(attr.clone());
            return true;
        }
        if attr.path().is_ident("deprecated") {
            out.deprecated.push(attr.clone());
            return true;
        }
        if !attr.path().is_ident("uds") {
            return true;
        }
        if !matches!(attr.meta, syn::Meta::List(_)) {
            errors.push(
                attr,
                "expected `#[uds(name = \"/Service/method\")]`, `#[uds(allow(...))]` or `#[uds(policy = path)]`",
            );
            return false;
        }
        let result = attr.parse_nested_meta(|meta| {
            if meta.path.is_ident("name") {
                let lit = string_value(&meta, "name = \"/Service/method\"")?;
                if lit.value().is_empty() {
                    return Err(syn::Error::new(
                        lit.span(),
                        "the wire name cannot be empty: e.g. \"/Service/method\"",
                    ));
                }
                set_once(&mut out.name, lit, &meta.path, errors);
                Ok(())
            } else if meta.path.is_ident("allow") || meta.path.is_ident("policy") {
                seen_access = true;
                parse_access_key(&meta, &mut access, errors)
            } else if meta.path.is_ident("default") {
                Err(meta.error(
                    "`default` goes on an argument: `#[uds(default)] arg: Option<T>`",
                ))
            } else if meta.path.is_ident("codec") || meta.path.is_ident("crate") {
                Err(meta.error(
                    "this option is for the whole service: `#[uds::service(...)]` on the trait",
                ))
            } else {
                Err(meta.error(
                    "unknown option: expected `name = \"...\"`, `allow(...)` or `policy = path`",
                ))
            }
        });
        if let Err(e) = result {
            errors.push_error(e);
        }
        false
    });
    out.access = seen_access.then_some(access);
    out
}

/// Removes `#[uds(...)]` from arguments: which ones say `default`.
fn take_arg_attrs(sig: &mut syn::Signature, errors: &mut Errors) -> Vec<Option<Span>> {
    let mut defaults = Vec::new();
    for input in &mut sig.inputs {
        let FnArg::Typed(pt) = input else {
            defaults.push(None);
            continue;
        };
        let mut default = None;
        pt.attrs.retain(|attr| {
            if !attr.path().is_ident("uds") {
                return true;
            }
            let result = attr.parse_nested_meta(|meta| {
                if meta.path.is_ident("default") {
                    if default.is_some() {
                        return Err(meta.error("duplicate `default`: give it once"));
                    }
                    default = Some(meta.path.span());
                    Ok(())
                } else {
                    Err(meta.error("unknown argument option: expected `#[uds(default)]`"))
                }
            });
            if let Err(e) = result {
                errors.push_error(e);
            }
            false
        });
        defaults.push(default);
    }
    defaults
}

fn parse_method(
    f: &syn::TraitItemFn,
    codec: Codec,
    attrs: MethodAttrs,
    arg_attrs: &[Option<Span>],
    trait_ident: &Ident,
    errors: &mut Errors,
) -> Option<Method> {
    let sig = &f.sig;
    let mut ok = check_signature(f, trait_ident, errors);
    let (ctx, args, stream_arg) = parse_args_of(sig, codec, arg_attrs, &mut ok, errors);
    let ret = parse_return(&sig.output, &mut ok, errors);
    if !ok {
        return None;
    }
    let wire_name = attrs.name.map_or_else(
        || format!("/{trait_ident}/{}", sig.ident.unraw_str()),
        |lit| lit.value(),
    );
    Some(Method {
        ident: sig.ident.clone(),
        wire_name,
        ctx,
        args,
        stream_arg,
        ret,
        docs: f
            .attrs
            .iter()
            .filter(|a| a.path().is_ident("doc"))
            .cloned()
            .collect(),
        cfgs: attrs.cfgs,
        deprecated: attrs.deprecated,
        access: attrs.access,
    })
}

trait UnrawStr {
    fn unraw_str(&self) -> String;
}

impl UnrawStr for Ident {
    fn unraw_str(&self) -> String {
        let s = self.to_string();
        s.strip_prefix("r#")
            .map_or_else(|| s.clone(), str::to_owned)
    }
}

/// Qualifiers, generics, body, name and receiver. Returns whether all hold.
fn check_signature(f: &syn::TraitItemFn, trait_ident: &Ident, errors: &mut Errors) -> bool {
    let sig = &f.sig;
    let before = errors.count();
    if sig.asyncness.is_none() {
        errors.push(
            sig.fn_token,
            "methods of a `#[uds::service]` trait must be `async fn`: write `async fn`",
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
    if !sig.generics.params.is_empty() {
        errors.push(
            &sig.generics.params,
            "generic methods cannot be served: the types on the wire must be concrete",
        );
    }
    if let Some(w) = &sig.generics.where_clause {
        errors.push(
            w,
            "a service method cannot have a `where` clause: the types on the wire are concrete; remove it",
        );
    }
    if let Some(body) = &f.default {
        errors.push(
            body,
            "service methods cannot have a default body: implement them in the `impl`",
        );
    }
    let name = sig.ident.unraw_str();
    if CLIENT_RESERVED.contains(&name.as_str()) {
        errors.push(
            &sig.ident,
            format!(
                "method name `{name}` is taken by the generated `{trait_ident}Client` (its own methods and `Clone`, `Debug`); rename the method, and keep the wire name with `#[uds(name = \"/{trait_ident}/{name}\")]`",
            ),
        );
    }
    if name.starts_with("__") {
        errors.push(
            &sig.ident,
            "names starting with `__` are reserved for the generated code: rename the method",
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

/// How an argument relates to the call context.
enum CtxKind {
    /// `&Context` (any path ending in `Context`): the context.
    Shared,
    /// `&mut Context`.
    Mut,
    /// `Context` by value, named as uds names it.
    Owned,
    /// Not a context.
    No,
}

fn ctx_kind(ty: &Type, krate: &[&str]) -> CtxKind {
    let is_ctx_path =
        |t: &Type| last_segment(t).is_some_and(|s| s.ident == "Context" && s.arguments.is_none());
    match ty {
        Type::Reference(r) if is_ctx_path(&r.elem) => {
            if r.mutability.is_some() {
                CtxKind::Mut
            } else {
                CtxKind::Shared
            }
        }
        Type::Path(p) if is_ctx_path(ty) => {
            let segs: Vec<String> = p
                .path
                .segments
                .iter()
                .map(|s| s.ident.to_string())
                .collect();
            let prefix: Vec<&str> = segs[..segs.len() - 1].iter().map(String::as_str).collect();
            if prefix.is_empty()
                || prefix == ["rpc"]
                || krate.contains(&prefix.first().copied().unwrap_or(""))
            {
                CtxKind::Owned
            } else {
                CtxKind::No
            }
        }
        _ => CtxKind::No,
    }
}

/// The optional `&Context` and the data arguments.
fn parse_args_of(
    sig: &syn::Signature,
    codec: Codec,
    arg_attrs: &[Option<Span>],
    ok: &mut bool,
    errors: &mut Errors,
) -> (Option<Type>, Vec<Arg>, Option<(Ident, Type)>) {
    let before = errors.count();
    let mut ctx: Option<Type> = None;
    let mut args = Vec::new();
    let mut stream_arg: Option<(Ident, Type)> = None;
    // The argument that came after the stream argument, if any.
    let mut after_stream: Option<Ident> = None;
    let typed = sig
        .inputs
        .iter()
        .zip(arg_attrs)
        .filter_map(|(a, d)| match a {
            FnArg::Typed(pt) => Some((pt, *d)),
            FnArg::Receiver(_) => None,
        });
    for (i, (pt, default)) in typed.enumerate() {
        let ty = &*pt.ty;
        let Some(name) = arg_name(&pt.pat, errors) else {
            continue;
        };
        if take_context(ty, i, default, &mut ctx, errors) {
            continue;
        }
        if let Some(item) = stream_item(ty) {
            if let Some(d) = default {
                errors.push_at(d, "`default` is for data arguments, not the stream");
            }
            if stream_arg.is_some() {
                errors.push(
                    ty,
                    "a method takes at most one stream argument: send one stream of an enum (or a message with a `oneof`) instead",
                );
            } else if check_nested(&item, ("a stream item", "stream items"), errors) {
                stream_arg = Some((name, item));
            }
            continue;
        }
        if stream_arg.is_some() && after_stream.is_none() {
            after_stream = Some(name.clone());
        }
        if !check_arg_type(ty, errors) {
            continue;
        }
        if let Some(d) = default {
            if codec != Codec::Json {
                errors.push_at(
                    d,
                    "`default` is for JSON services: a protobuf message has its own defaults",
                );
                continue;
            }
            if last_segment(ty).is_none_or(|s| s.ident != "Option") {
                errors.push(
                    ty,
                    "`#[uds(default)]` needs an `Option<T>`: a missing argument decodes as `None`",
                );
                continue;
            }
        }
        args.push(Arg {
            ident: name,
            ty: ty.clone(),
            default: default.is_some(),
        });
    }
    if let (Some(later), Some((name, _))) = (&after_stream, &stream_arg) {
        errors.push(
            name,
            format!(
                "the stream argument must be the last one: move `{name}` after `{later}` (the other arguments are sent first, with the request)"
            ),
        );
    }
    if codec == Codec::Proto {
        for a in args.iter().skip(1) {
            errors.push(
                &a.ty,
                "a method of a proto service takes at most one argument, a `prost::Message`: wrap them in one message",
            );
        }
    }
    *ok &= errors.count() == before;
    (ctx, args, stream_arg)
}

/// An argument that is (or misuses) the context: recorded in `ctx` or
/// reported; `false` if it is no context at all.
fn take_context(
    ty: &Type,
    position: usize,
    default: Option<Span>,
    ctx: &mut Option<Type>,
    errors: &mut Errors,
) -> bool {
    match ctx_kind(ty, &["uds"]) {
        CtxKind::Shared => {
            if let Some(d) = default {
                errors.push_at(d, "`default` is for data arguments, not the context");
            }
            if ctx.is_some() {
                errors.push(
                    ty,
                    "only one context argument: remove this one (it is the same `&uds::Context`)",
                );
            } else if position != 0 {
                errors.push(
                    ty,
                    "the `&Context` argument must come first, right after `&self`",
                );
            } else {
                *ctx = Some(ty.clone());
            }
        }
        CtxKind::Mut => errors.push(
            ty,
            "the context is shared by the call: take `&uds::Context`, not `&mut`",
        ),
        CtxKind::Owned => errors.push(ty, "take the context by reference: `ctx: &uds::Context`"),
        CtxKind::No => return false,
    }
    true
}

/// The name of an argument, which names it on the wire: a plain
/// identifier, else an error on the pattern.
fn arg_name(pat: &Pat, errors: &mut Errors) -> Option<Ident> {
    match pat {
        Pat::Ident(pi) if pi.by_ref.is_none() && pi.subpat.is_none() => {
            if let Some(m) = &pi.mutability {
                errors.push(m, "drop `mut` here: rebind the argument in your `impl` if needed (`let mut x = x;`)");
                return None;
            }
            Some(pi.ident.clone())
        }
        Pat::Wild(w) => {
            errors.push(w, "name the argument: the name is part of the wire format (`_name` in the `impl` if unused)");
            None
        }
        pat => {
            errors.push(
                pat,
                "use a plain argument name: it names the argument on the wire",
            );
            None
        }
    }
}

/// `T` of a stream argument, `uds::Streaming<T>` (by the last segment of
/// its path, as far as a macro can tell).
fn stream_item(ty: &Type) -> Option<Type> {
    let seg = last_segment(ty)?;
    if seg.ident != "Streaming" {
        return None;
    }
    match type_args(seg).as_slice() {
        [t] => Some(t.clone()),
        _ => None,
    }
}

/// An argument's type: sized, owned, concrete. Reports the first problem.
fn check_arg_type(ty: &Type, errors: &mut Errors) -> bool {
    match ty {
        Type::Reference(r) => {
            let hint = owned_hint(&r.elem);
            errors.push(
                ty,
                format!("arguments are sent to another process by value: take an owned type{hint}"),
            );
            return false;
        }
        Type::ImplTrait(_) => {
            errors.push(
                ty,
                "`impl Trait` arguments cannot be decoded: name a concrete type",
            );
            return false;
        }
        Type::Slice(_) => {
            errors.push(
                ty,
                "an argument must have a known size: take `Vec<T>` instead of `[T]`",
            );
            return false;
        }
        Type::TraitObject(_) => {
            errors.push(ty, "a trait object cannot be decoded: name a concrete type");
            return false;
        }
        Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => {
            errors.push(
                ty,
                "an argument must have a known size: take `String` instead of `str`",
            );
            return false;
        }
        _ => {}
    }
    check_nested(ty, ("an argument", "arguments"), errors)
}

/// `String` for `str`, `Vec<T>` for `[T]`: what to take instead of `&T`.
fn owned_hint(elem: &Type) -> String {
    match elem {
        Type::Path(p) if p.path.is_ident("str") => " (`String` instead of `&str`)".to_owned(),
        Type::Slice(s) => {
            let t = s.elem.to_token_stream().to_string().replace(' ', "");
            format!(" (`Vec<{t}>` instead of `&[{t}]`)")
        }
        other => {
            let t = other.to_token_stream().to_string().replace(' ', "");
            format!(" (`{t}` instead of a reference to it)")
        }
    }
}

/// References, trait objects, `impl Trait`, raw pointers and streams
/// anywhere inside a type: the first one found is an error.
fn check_nested(ty: &Type, (what, whats): (&str, &str), errors: &mut Errors) -> bool {
    let mut bad: Option<(&dyn ToTokens, String)> = None;
    visit(ty, &mut |t| {
        if bad.is_some() {
            return;
        }
        let msg = match t {
            Type::Reference(r) => Some(format!(
                "{whats} are sent to another process by value: use an owned type{} here",
                owned_hint(&r.elem)
            )),
            Type::TraitObject(_) => Some(if what == "an error" {
                "a trait object cannot travel in an error: use your own error type deriving `serde::Serialize` and `serde::Deserialize`, or `String`".to_owned()
            } else {
                format!("a trait object cannot travel in {what}: name a concrete type")
            }),
            Type::ImplTrait(_) => Some(format!(
                "`impl Trait` cannot travel in {what}: name a concrete type"
            )),
            Type::Ptr(_) => Some(format!(
                "a raw pointer cannot travel in {what}: use an owned value"
            )),
            Type::BareFn(_) => Some(format!("a function pointer cannot travel in {what}")),
            Type::Infer(_) => Some(format!("name the type: `_` cannot be inferred in {what}")),
            Type::Path(p)
                if p.qself.is_none()
                    && p.path.segments.first().is_some_and(|s| s.ident == "Self") =>
            {
                Some(format!(
                    "`Self` is the implementing type, which cannot travel in {what}: name a concrete type"
                ))
            }
            Type::Path(_) => last_segment(t).and_then(|s| {
                if s.ident == "ServerStream" || s.ident == "ClientStream" {
                    Some(if what == "an argument" {
                        "a client stream is taken as `items: uds::Streaming<T>`, the last argument; a `ServerStream` is only a result".to_owned()
                    } else {
                        "a stream can only be a method's whole result: `-> uds::ServerStream<T>`"
                            .to_owned()
                    })
                } else if s.ident == "Streaming" {
                    Some(
                        "a stream is a whole argument, the last one (`items: uds::Streaming<T>`), or a whole result (`-> uds::ServerStream<T>`)"
                            .to_owned(),
                    )
                } else {
                    None
                }
            }),
            _ => None,
        };
        if let Some(msg) = msg {
            bad = Some((t, msg));
        }
    });
    match bad {
        Some((t, msg)) => {
            errors.push(t, msg);
            false
        }
        None => true,
    }
}

fn visit<'a>(ty: &'a Type, f: &mut dyn FnMut(&'a Type)) {
    f(ty);
    match ty {
        Type::Reference(r) => visit(&r.elem, f),
        Type::Slice(s) => visit(&s.elem, f),
        Type::Array(a) => visit(&a.elem, f),
        Type::Paren(p) => visit(&p.elem, f),
        Type::Group(g) => visit(&g.elem, f),
        Type::Ptr(p) => visit(&p.elem, f),
        Type::Tuple(t) => t.elems.iter().for_each(|e| visit(e, f)),
        Type::Path(p) => {
            if let Some(q) = &p.qself {
                visit(&q.ty, f);
            }
            for seg in &p.path.segments {
                if let PathArguments::AngleBracketed(a) = &seg.arguments {
                    for g in &a.args {
                        if let GenericArgument::Type(t) = g {
                            visit(t, f);
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

fn parse_return(output: &ReturnType, ok: &mut bool, errors: &mut Errors) -> Ret {
    let ty = match output {
        ReturnType::Default => return Ret::Unit,
        ReturnType::Type(_, ty) => &**ty,
    };
    let before = errors.count();
    let ret = classify_return(ty, errors);
    *ok &= errors.count() == before;
    ret
}

fn is_stream(ty: &Type, name: &str) -> bool {
    last_segment(ty).is_some_and(|s| s.ident == name)
}

fn classify_return(ty: &Type, errors: &mut Errors) -> Ret {
    match ty {
        Type::Tuple(t) if t.elems.is_empty() => return Ret::Unit,
        Type::ImplTrait(_) => {
            errors.push(
                ty,
                "`impl Trait` results cannot be encoded: name a concrete type (for a stream, `uds::ServerStream<T>`)",
            );
            return Ret::Unit;
        }
        Type::Reference(r) => {
            let hint = owned_hint(&r.elem);
            errors.push(
                ty,
                format!("results are sent to another process by value: return an owned type{hint}"),
            );
            return Ret::Unit;
        }
        Type::Slice(_) | Type::TraitObject(_) => {
            errors.push(ty, "a result must have a known size and a concrete type: return `Vec<T>` or your own type");
            return Ret::Unit;
        }
        Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => {
            errors.push(
                ty,
                "a result must have a known size: return `String` instead of `str`",
            );
            return Ret::Unit;
        }
        _ => {}
    }
    let Some(seg) = last_segment(ty) else {
        check_nested(ty, ("a result", "results"), errors);
        return Ret::Plain(Box::new(ty.clone()));
    };
    let targs = type_args(seg);
    if seg.ident == "ClientStream" || seg.ident == "Streaming" {
        errors.push(
            ty,
            "a method returns `uds::ServerStream<T>`: the generated client hands its callers a `uds::Streaming<T>`",
        );
        return Ret::Unit;
    }
    if seg.ident == "Result" {
        match targs.as_slice() {
            [t, e] => {
                if is_stream(t, "ServerStream")
                    || is_stream(t, "ClientStream")
                    || is_stream(t, "Streaming")
                {
                    errors.push(
                        ty,
                        "a stream's errors travel inside it: return `uds::ServerStream<T>` (and `Result` items, e.g. `ServerStream<Result<T, E>>`, for errors of each item)",
                    );
                    return Ret::Unit;
                }
                check_error_type(e, errors);
                check_nested(t, ("a result", "results"), errors);
                return Ret::Result(Box::new(t.clone()), Box::new(e.clone()));
            }
            [_] => {
                errors.push(
                    ty,
                    "this `Result` alias fixes an error type that cannot be sent (such as `std::io::Error`): write `Result<T, E>` with a serializable `E` (your own error type, or `String`)",
                );
                return Ret::Unit;
            }
            _ => {}
        }
    }
    if seg.ident == "ServerStream" && targs.len() == 1 {
        let item = &targs[0];
        if let Some(r) = last_segment(item).filter(|r| r.ident == "Result")
            && let [t, e] = type_args(r).as_slice()
        {
            check_error_type(e, errors);
            check_nested(t, ("a stream item", "stream items"), errors);
            return Ret::FallibleStream(Box::new(t.clone()), Box::new(e.clone()));
        }
        check_nested(item, ("a stream item", "stream items"), errors);
        return Ret::Stream(Box::new(item.clone()));
    }
    check_nested(ty, ("a result", "results"), errors);
    Ret::Plain(Box::new(ty.clone()))
}

/// `E` of `Result<T, E>`: not `Box<dyn Error>`, `io::Error`, `anyhow::Error`.
fn check_error_type(e: &Type, errors: &mut Errors) {
    let fixed = last_segment(e).is_some_and(|s| {
        if let Type::Path(p) = e {
            let first = p.path.segments.first().map(|s| s.ident.to_string());
            let known = matches!(first.as_deref(), Some("io" | "std" | "anyhow" | "eyre"));
            s.ident == "Error" && known
        } else {
            false
        }
    });
    if fixed {
        errors.push(
            e,
            "this error type cannot be sent to another process: use your own error type deriving `serde::Serialize` and `serde::Deserialize` (or `String`)",
        );
        return;
    }
    check_nested(e, ("an error", "errors"), errors);
}

fn last_segment(ty: &Type) -> Option<&syn::PathSegment> {
    match ty {
        Type::Path(p) if p.qself.is_none() => p.path.segments.last(),
        _ => None,
    }
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

/// A type named like the generated client or server is the generated item,
/// not the user's: an error on it rather than a cascade of follow-up errors.
fn check_generated_names(ty: &Type, generated: &[String; 2], errors: &mut Errors) {
    let mut found: Option<&Type> = None;
    visit(ty, &mut |t| {
        if found.is_none()
            && let Type::Path(p) = t
            && p.qself.is_none()
            && p.path.segments.len() == 1
            && generated.iter().any(|g| p.path.is_ident(g))
        {
            found = Some(t);
        }
    });
    if let Some(t) = found {
        errors.push(
            t,
            format!(
                "`{}` is the name of an item `#[uds::service]` generates for this trait: rename your type",
                t.to_token_stream()
            ),
        );
    }
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
