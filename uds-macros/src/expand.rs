//! Expand: one generator per emitted item — the trait with `Send` futures,
//! the client, the server. Generated code names everything by absolute path
//! (`::core`, `::std`, the uds crate path) so it compiles under
//! `#![no_implicit_prelude]` and with the crate renamed.
//!
//! Every value type is used through the codec's trait
//! (`uds::codec::JsonType` / `ProtoType`) named on the user's own type
//! token, so that a type of the wrong kind is one error on that type. The
//! client and server are emitted inside `uds::__private01::{json,proto}_service!`:
//! a wrong `crate = "..."` path, or a codec whose cargo feature is off, is
//! then one error instead of one per use.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{ItemTrait, ReturnType, TraitItem, Type};

use crate::model::{Access, Codec, Method, Ret, Service};

/// A local of the generated code. Mixed-site hygiene: it cannot clash with,
/// or be shadowed by, a user's parameter of the same name.
fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

pub(crate) fn expand(item: &ItemTrait, svc: &Service) -> TokenStream {
    let k = &svc.krate;
    let trait_ = emit_trait(item);
    let client = emit_client(item, svc);
    let server = emit_server(item, svc);
    let checks = emit_type_checks(svc);
    let gate = match svc.codec {
        Codec::Json => quote!(#k::__private01::json_service!),
        Codec::Proto => quote!(#k::__private01::proto_service!),
    };
    quote! {
        #trait_
        #gate {
            #client
            #server
            #checks
        }
    }
}

/// The trait, each `async fn` turned into `fn -> impl Future + Send` so that
/// the server can run calls on any thread. Implementations keep writing
/// `async fn`.
fn emit_trait(item: &ItemTrait) -> TokenStream {
    let mut item = item.clone();
    for ti in &mut item.items {
        let TraitItem::Fn(f) = ti else { continue };
        let out = match &f.sig.output {
            ReturnType::Default => quote!(()),
            ReturnType::Type(_, ty) => quote!(#ty),
        };
        f.sig.asyncness = None;
        f.sig.output = syn::parse_quote! {
            -> impl ::core::future::Future<Output = #out> + ::core::marker::Send
        };
    }
    quote!(#item)
}

/// The codec's value trait: `uds::codec::JsonType` or `ProtoType`.
fn value_trait(svc: &Service) -> TokenStream {
    let k = &svc.krate;
    match svc.codec {
        Codec::Json => quote!(#k::codec::JsonType),
        Codec::Proto => quote!(#k::codec::ProtoType),
    }
}

/// `<T as JsonType>::f`, every token on the user's type: an unfit type is
/// reported there, with the trait's message.
fn on_type(svc: &Service, t: &Type, f: &str) -> TokenStream {
    let vt = value_trait(svc);
    let f = Ident::new(f, Span::call_site());
    quote_spanned!(t.span()=> <#t as #vt>::#f)
}

fn emit_client(item: &ItemTrait, svc: &Service) -> TokenStream {
    let k = &svc.krate;
    let vis = &item.vis;
    let trait_ident = &item.ident;
    let client = format_ident!("{}Client", trait_ident);
    let doc = format!(
        "Client for the [`{trait_ident}`] service: one async method per trait method, \
         each returning the result or a typed error. Cheap to clone; clones share the \
         connection. Per-call options: `client.with_timeout(d).method(..)`."
    );
    let methods = svc.methods.iter().map(|m| client_method(item, svc, m));
    let names = svc.methods.iter().map(|m| {
        let cfgs = &m.cfgs;
        let w = &m.wire_name;
        quote!(#(#cfgs)* #w)
    });
    quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #client {
            client: #k::rpc::Client,
            options: #k::rpc::CallOptions,
        }

        #[allow(deprecated, clippy::needless_pass_by_value, clippy::used_underscore_binding)]
        impl #client {
            /// A client over an RPC client (sharing its connection).
            #[must_use]
            #vis fn new(client: #k::rpc::Client) -> Self {
                Self {
                    client,
                    options: <#k::rpc::CallOptions as ::core::default::Default>::default(),
                }
            }

            /// A client over a connected socket (for example an end of `uds::net::pair()`).
            ///
            /// # Panics
            ///
            /// Outside a tokio runtime, as `uds::rpc::Client::new`.
            #[must_use]
            #vis fn from_conn(conn: #k::net::Conn) -> Self {
                Self::new(#k::rpc::Client::new(conn))
            }

            /// Connects to the server at `path`, with the default checks of
            /// `uds::net::Connector` (socket owner and mode, server uid).
            ///
            /// # Errors
            ///
            /// The `uds::net::NetError` of the connection or of a failed check.
            #vis async fn connect(
                path: impl ::core::convert::AsRef<::std::path::Path>,
            ) -> ::core::result::Result<Self, #k::net::NetError> {
                ::core::result::Result::Ok(Self::new(#k::rpc::Client::connect(path).await?))
            }

            /// A client for calls with these options (timeout, stream
            /// window): a cheap clone sharing the connection, for one call
            /// (`client.with_options(opts).method(..).await`) or many.
            #[must_use]
            #vis fn with_options(&self, options: #k::rpc::CallOptions) -> Self {
                Self {
                    client: <#k::rpc::Client as ::core::clone::Clone>::clone(&self.client),
                    options,
                }
            }

            /// A client whose calls time out after `timeout` (the call's
            /// deadline, sent to the server), other options kept: a cheap
            /// clone sharing the connection, e.g.
            /// `client.with_timeout(Duration::from_secs(1)).method(..).await`.
            #[must_use]
            #vis fn with_timeout(&self, timeout: ::core::time::Duration) -> Self {
                let mut options = self.options;
                options.timeout = ::core::option::Option::Some(timeout);
                self.with_options(options)
            }

            /// The options of this client's calls.
            #[must_use]
            #vis fn options(&self) -> &#k::rpc::CallOptions {
                &self.options
            }

            /// The underlying RPC client.
            #[must_use]
            #vis fn rpc(&self) -> &#k::rpc::Client {
                &self.client
            }

            #(#methods)*
        }

        #[automatically_derived]
        impl #k::plugin::PluginClient for #client {
            const SERVICE: &'static str = ::core::stringify!(#trait_ident);
            const METHODS: &'static [&'static str] = &[#(#names),*];

            fn from_rpc(client: #k::rpc::Client) -> Self {
                Self::new(client)
            }
        }
    }
}

/// The request's data, as a `Payload` (a protobuf argument's large
/// `bytes` field is then sent without a copy).
fn encode_args(svc: &Service, m: &Method) -> TokenStream {
    let k = &svc.krate;
    let one_piece = |bytes: TokenStream| quote!(#k::__private01::one_piece(#bytes));
    match (svc.codec, m.args.as_slice()) {
        // No argument: JSON `null` (Go JSON handlers cannot decode empty
        // data); an empty protobuf message.
        (Codec::Json, []) => one_piece(quote!(#k::__private01::Bytes::from_static(b"null"))),
        (Codec::Proto, []) => one_piece(quote!(#k::__private01::Bytes::new())),
        (_, [a]) => {
            let (id, enc) = (&a.ident, on_type(svc, &a.ty, "__encode_payload"));
            quote!(#k::__private01::encoded_payload(#enc(&#id))?)
        }
        (_, many) => {
            let adds = many.iter().map(|a| {
                let name = a.ident.unraw().to_string();
                let (id, to) = (&a.ident, on_type(svc, &a.ty, "__to_value"));
                quote!(.arg(#name, #to(&#id))?)
            });
            one_piece(quote!(#k::__private01::JsonArgs::new() #(#adds)* .finish()?))
        }
    }
}

fn client_method(item: &ItemTrait, svc: &Service, m: &Method) -> TokenStream {
    let (l_data, l_s) = (local("__data"), local("__s"));
    let k = &svc.krate;
    let vis = &item.vis;
    let ident = &m.ident;
    let wire = &m.wire_name;
    let (docs, cfgs, deprecated) = (&m.docs, &m.cfgs, &m.deprecated);
    let bidi = matches!(m.ret, Ret::Stream(_) | Ret::FallibleStream(..));
    let stream_param = m.stream_arg.as_ref().map(|(id, t)| {
        let bound = if bidi {
            quote!(+ ::core::marker::Send + 'static)
        } else {
            quote!()
        };
        quote!(#id: impl #k::__private01::Stream<Item = #t> #bound)
    });
    let params = m
        .args
        .iter()
        .map(|a| {
            let (id, t) = (&a.ident, &a.ty);
            quote!(#id: #t)
        })
        .chain(stream_param);
    let data = encode_args(svc, m);
    let call = if let Some((id, t)) = &m.stream_arg {
        let enc = on_type(svc, t, "__encode");
        quote!(#k::__private01::client_stream_call(&self.client, #wire, #l_data.into_bytes(), self.options, #id, #enc).await)
    } else {
        quote!(self.client.call_payload(#wire, #l_data, self.options).await)
    };
    let open_stream = |out: &Type| {
        let dec = on_type(svc, out, "__decode");
        if let Some((id, t)) = &m.stream_arg {
            let enc = on_type(svc, t, "__encode");
            quote!(#k::__private01::bidi_call(&self.client, #wire, #l_data.into_bytes(), self.options, #id, #enc, #dec).await?)
        } else {
            quote!(#k::__private01::client_stream(self.client.call_stream(#wire, #l_data.into_bytes(), self.options).await?, #dec))
        }
    };
    let (ret, body, errors) = match &m.ret {
        Ret::Unit => (
            quote!(::core::result::Result<(), #k::rpc::RpcError>),
            quote! { #call?; ::core::result::Result::Ok(()) },
            "`uds::rpc::RpcError` if the call fails (transport, deadline, server error).",
        ),
        Ret::Plain(t) => {
            let dec = on_type(svc, t, "__decode");
            (
                quote!(::core::result::Result<#t, #k::rpc::RpcError>),
                quote! { #k::__private01::decode_reply(#call?, #dec) },
                "`uds::rpc::RpcError` if the call fails (transport, deadline, server error).",
            )
        }
        Ret::Result(t, e) => {
            let (dt, de) = (on_type(svc, t, "__decode"), on_type(svc, e, "__decode"));
            (
                quote!(::core::result::Result<#t, #k::CallError<#e>>),
                quote! { #k::__private01::app_reply(#call, #dt, #de) },
                "`uds::CallError::App` with the method's error, or `uds::CallError::Rpc` if the call fails.",
            )
        }
        Ret::Stream(t) => {
            let open = open_stream(t);
            (
                quote!(::core::result::Result<#k::Streaming<#t>, #k::rpc::RpcError>),
                quote! {
                    let #l_s = #open;
                    ::core::result::Result::Ok(#l_s)
                },
                "`uds::rpc::RpcError` if the call fails; the stream's items can fail too.",
            )
        }
        Ret::FallibleStream(t, e) => {
            let open = open_stream(t);
            let de = on_type(svc, e, "__decode");
            (
                quote!(::core::result::Result<#k::Streaming<#t, #k::CallError<#e>>, #k::rpc::RpcError>),
                quote! {
                    let #l_s = #open;
                    ::core::result::Result::Ok(#k::__private01::fallible(#l_s, #de))
                },
                "`uds::rpc::RpcError` if the call fails; the stream's items can fail too, its last with `uds::CallError::App` when the handler's stream yields an error.",
            )
        }
    };
    let sep = if docs.is_empty() { "" } else { "\n" };
    let wire_doc = format!("{sep}Calls `{wire}` on the server.\n\n# Errors\n\n{errors}");
    quote! {
        #(#cfgs)*
        #(#docs)*
        #[doc = #wire_doc]
        #(#deprecated)*
        #vis async fn #ident(&self, #(#params),*) -> #ret {
            let #l_data = #data;
            #body
        }
    }
}

fn emit_server(item: &ItemTrait, svc: &Service) -> TokenStream {
    let ty = local("__UdsImpl");
    let k = &svc.krate;
    let vis = &item.vis;
    let trait_ident = &item.ident;
    let server = format_ident!("{}Server", trait_ident);
    let doc = format!(
        "Serves any implementation of [`{trait_ident}`]: register it on a \
         `uds::rpc::ServerBuilder` (or [`build`]({server}::build) a server) and serve a listener."
    );
    let registrations = svc
        .methods
        .iter()
        .map(|m| register_method(svc, trait_ident, m));
    let names = svc.methods.iter().map(|m| {
        let cfgs = &m.cfgs;
        let w = &m.wire_name;
        quote!(#(#cfgs)* #w)
    });
    quote! {
        #[doc = #doc]
        #vis struct #server<#ty> {
            imp: ::std::sync::Arc<#ty>,
        }

        #[automatically_derived]
        impl<#ty> ::core::clone::Clone for #server<#ty> {
            fn clone(&self) -> Self {
                Self { imp: <::std::sync::Arc<#ty> as ::core::clone::Clone>::clone(&self.imp) }
            }
        }

        #[automatically_derived]
        impl<#ty> ::core::fmt::Debug for #server<#ty> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#server)).finish_non_exhaustive()
            }
        }

        #[allow(deprecated, clippy::used_underscore_binding, clippy::too_many_lines)]
        impl<#ty: #trait_ident + ::core::marker::Send + ::core::marker::Sync + 'static> #server<#ty> {
            /// The wire names of the service's methods.
            #vis const METHODS: &'static [&'static str] = &[#(#names),*];

            /// Serves `imp`.
            #[must_use]
            #vis fn new(imp: #ty) -> Self {
                Self { imp: ::std::sync::Arc::new(imp) }
            }

            /// Serves a shared `imp`.
            #[must_use]
            #vis fn from_arc(imp: ::std::sync::Arc<#ty>) -> Self {
                Self { imp }
            }

            /// Registers every method on `builder`.
            #[must_use]
            #vis fn register(&self, builder: #k::rpc::ServerBuilder) -> #k::rpc::ServerBuilder {
                #(#registrations)*
                builder
            }

            /// A server with the default settings that serves this service.
            ///
            /// # Errors
            ///
            /// `uds::rpc::BuildError` as `uds::rpc::ServerBuilder::build`.
            #vis fn build(&self) -> ::core::result::Result<#k::rpc::Server, #k::rpc::BuildError> {
                self.register(#k::rpc::Server::builder()).build()
            }
        }

        #[automatically_derived]
        impl<#ty: #trait_ident + ::core::marker::Send + ::core::marker::Sync + 'static>
            #k::plugin::PluginService for #server<#ty>
        {
            const SERVICE: &'static str = ::core::stringify!(#trait_ident);
            const METHODS: &'static [&'static str] = <Self>::METHODS;

            fn register(&self, builder: #k::rpc::ServerBuilder) -> #k::rpc::ServerBuilder {
                <Self>::register(self, builder)
            }
        }
    }
}

/// The policies of one rule: the union of its allowed identities, and its
/// policy function (both must allow when both are given).
fn policies_of(k: &syn::Path, access: &Access, out: &mut Vec<TokenStream>) {
    let mut allow: Vec<TokenStream> = Vec::new();
    if access.same_user {
        allow.push(quote!(#k::auth::Policy::same_user()));
    }
    if !access.uids.is_empty() {
        let ids = &access.uids;
        allow.push(quote!(#k::auth::Policy::uids([#(#ids),*])));
    }
    if !access.gids.is_empty() {
        let ids = &access.gids;
        allow.push(quote!(#k::auth::Policy::gids([#(#ids),*])));
    }
    if let Some((first, rest)) = allow.split_first() {
        out.push(quote!(#first #(.or(#rest))*));
    }
    if let Some(path) = &access.policy {
        let check = quote_spanned! {path.span()=>
            {
                let __policy: fn(&#k::Cred) -> bool = #path;
                __policy
            }
        };
        out.push(quote!(#k::auth::Policy::custom(#check)));
    }
}

fn register_method(svc: &Service, trait_ident: &syn::Ident, m: &Method) -> TokenStream {
    let ty = local("__UdsImpl");
    let (l_data, l_imp, l_ctx) = (local("__data"), local("__imp"), local("__ctx"));
    let l_out = local("__out");
    let k = &svc.krate;
    let ident = &m.ident;
    let wire = &m.wire_name;
    let cfgs = &m.cfgs;
    let decode = decode_args(svc, m);
    let ctx_arg = m.ctx.as_ref().map(|t| {
        let cast = quote_spanned!(t.span()=> <#t as #k::rpc::FromContext<'_>>::from_context);
        quote!(#cast(&#l_ctx),)
    });
    let l_items = local("__items");
    let stream_arg = m.stream_arg.as_ref().map(|(id, _)| id);
    let args = m.args.iter().map(|a| &a.ident).chain(stream_arg);
    let invoke = quote!(<#ty as #trait_ident>::#ident(&*#l_imp, #ctx_arg #(#args),*).await);
    let take_items = m.stream_arg.as_ref().map(|(id, t)| {
        let dec = on_type(svc, t, "__decode");
        quote!(let #id: #k::Streaming<#t> = #k::__private01::server_items(#l_items, #dec);)
    });
    let (register, result) = handler_result(svc, m, &invoke);
    // With a client stream, the handler kind takes the items too.
    let (register, items_param, result) = match (&m.stream_arg, register.to_string().as_str()) {
        (None, "handler") => (quote!(handler_payload), quote!(), result),
        (None, _) => (register, quote!(), result),
        (Some(_), "streaming") => (
            quote!(bidi_streaming),
            quote!(, #l_items: #k::rpc::RpcItems),
            result,
        ),
        // A client stream's one reply is plain bytes.
        (Some(_), _) => (
            quote!(client_streaming),
            quote!(, #l_items: #k::rpc::RpcItems),
            quote! {
                let #l_out: ::core::result::Result<#k::__private01::Payload, #k::rpc::HandlerError> = { #result };
                #l_out.map(#k::__private01::Payload::into_bytes)
            },
        ),
    };
    let (make_pol, clone_pol, check) = authorization(svc, m);
    quote! {
        #(#cfgs)*
        let builder = {
            let #l_imp = <::std::sync::Arc<#ty> as ::core::clone::Clone>::clone(&self.imp);
            #make_pol
            builder.#register(#wire, move |#l_ctx: #k::rpc::Context, #l_data: #k::__private01::Bytes #items_param| {
                let #l_imp = <::std::sync::Arc<#ty> as ::core::clone::Clone>::clone(&#l_imp);
                #clone_pol
                async move {
                    let _ = &#l_ctx;
                    // Authorization first: a denied caller's data is not decoded.
                    #check
                    #decode
                    #take_items
                    #result
                }
            })
        };
    }
}

/// The registration method (`handler`, `streaming`) and the body that
/// turns the handler's value into the reply.
fn handler_result(svc: &Service, m: &Method, invoke: &TokenStream) -> (TokenStream, TokenStream) {
    let (l_out, l_v, l_e, l_s) = (local("__out"), local("__v"), local("__e"), local("__s"));
    let k = &svc.krate;
    match &m.ret {
        Ret::Unit => (quote!(handler), {
            // No result: JSON `null` (the Go JSON client cannot decode
            // empty data); an empty protobuf message.
            let empty = match svc.codec {
                Codec::Json => quote!(#k::__private01::Bytes::from_static(b"null")),
                Codec::Proto => quote!(#k::__private01::Bytes::new()),
            };
            quote! { let () = #invoke; ::core::result::Result::Ok(#k::__private01::one_piece(#empty)) }
        }),
        Ret::Plain(t) => {
            let enc = on_type(svc, t, "__encode_payload");
            (
                quote!(handler),
                quote! { let #l_out: #t = #invoke; #k::__private01::encoded_result_payload(#enc(&#l_out)) },
            )
        }
        Ret::Result(t, e) => {
            let (et, ee) = (
                on_type(svc, t, "__encode_payload"),
                on_type(svc, e, "__encode"),
            );
            (
                quote!(handler),
                quote! {
                    match #invoke {
                        ::core::result::Result::Ok(#l_v) => #k::__private01::encoded_result_payload(#et(&#l_v)),
                        ::core::result::Result::Err(#l_e) => ::core::result::Result::Err(
                            #k::__private01::app_error(#ee(&#l_e)),
                        ),
                    }
                },
            )
        }
        Ret::Stream(t) => {
            let enc = on_type(svc, t, "__encode");
            (
                quote!(streaming),
                quote! {
                    let #l_s = #invoke;
                    ::core::result::Result::Ok(#k::__private01::encode_stream(#l_s, #enc))
                },
            )
        }
        Ret::FallibleStream(t, e) => {
            let (et, ee) = (on_type(svc, t, "__encode"), on_type(svc, e, "__encode"));
            (
                quote!(streaming),
                quote! {
                    let #l_s = #invoke;
                    ::core::result::Result::Ok(#k::__private01::encode_fallible_stream(#l_s, #et, #ee))
                },
            )
        }
    }
}

/// The server side of the arguments: decode them from the request.
fn decode_args(svc: &Service, m: &Method) -> TokenStream {
    let (l_data, l_args) = (local("__data"), local("__args"));
    let k = &svc.krate;
    match m.args.as_slice() {
        [] => quote!(let _ = #l_data;),
        [a] => {
            let (id, t, dec) = (&a.ident, &a.ty, on_type(svc, &a.ty, "__decode"));
            quote!(let #id: #t = #k::__private01::decode_arg(#l_data, #dec)?;)
        }
        many => {
            let takes = many.iter().map(|a| {
                let name = a.ident.unraw().to_string();
                let (id, t, from) = (&a.ident, &a.ty, on_type(svc, &a.ty, "__from_value"));
                if a.default {
                    quote!(let #id: #t = #l_args.take_or_null(#name, #from)?;)
                } else {
                    quote!(let #id: #t = #l_args.take(#name, #from)?;)
                }
            });
            quote! {
                let mut #l_args = #k::__private01::JsonArgs::parse(&#l_data)?;
                #(#takes)*
            }
        }
    }
}

/// The authorization of one method: build its policies once, clone them
/// into each call, check them before anything is decoded.
fn authorization(svc: &Service, m: &Method) -> (TokenStream, TokenStream, TokenStream) {
    let (l_ctx, l_pol) = (local("__ctx"), local("__policies"));
    let k = &svc.krate;
    let wire = &m.wire_name;
    let mut policies = Vec::new();
    if let Some(a) = &svc.access {
        policies_of(k, a, &mut policies);
    }
    if let Some(a) = &m.access {
        policies_of(k, a, &mut policies);
    }
    if policies.is_empty() {
        (quote!(), quote!(), quote!())
    } else {
        (
            quote! {
                let #l_pol: ::std::sync::Arc<[#k::auth::Policy]> =
                    ::std::sync::Arc::from([#(#policies),*]);
            },
            quote! {
                let #l_pol = <::std::sync::Arc<[#k::auth::Policy]> as ::core::clone::Clone>::clone(&#l_pol);
            },
            quote! { #k::__private01::authorize(&#l_ctx, #wire, &#l_pol)?; },
        )
    }
}

/// A plain result type that is a `Result` alias would send its errors as a
/// success: one error on the type, saying to write `Result<T, E>`.
fn emit_type_checks(svc: &Service) -> TokenStream {
    let k = &svc.krate;
    let checks = svc.methods.iter().filter_map(|m| {
        let Ret::Plain(t) = &m.ret else { return None };
        let cfgs = &m.cfgs;
        Some(quote_spanned! {t.span()=>
            #(#cfgs)*
            const _: () = {
                #[allow(unused_imports)]
                use #k::__private01::NotResult as _;
                ::core::assert!(
                    !#k::__private01::ResultProbe::<#t>::IS_RESULT,
                    "this result type is a `Result` alias: write `Result<T, E>` in the trait, so that errors reach the client as `uds::CallError::App`",
                );
            };
        })
    });
    quote!(#(#checks)*)
}
