//! Expand: one generator per emitted item — the trait with `Send` futures,
//! the client, the server. Generated code names everything by absolute path
//! (`::core`, `::std`, the uds crate path) so it compiles under
//! `#![no_implicit_prelude]` and with the crate renamed.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{ItemTrait, ReturnType, TraitItem, Type};

use crate::model::{Codec, Method, Ret, Service};

/// A local of the generated code. Mixed-site hygiene: it cannot clash with,
/// or be shadowed by, a user's parameter of the same name.
fn local(name: &str) -> Ident {
    Ident::new(name, Span::mixed_site())
}

pub(crate) fn expand(item: &ItemTrait, svc: &Service) -> TokenStream {
    let trait_ = emit_trait(item);
    let client = emit_client(item, svc);
    let server = emit_server(item, svc);
    let checks = emit_type_checks(svc);
    quote! {
        #trait_
        #client
        #server
        #checks
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

fn codec_path(svc: &Service) -> TokenStream {
    let k = &svc.krate;
    match svc.codec {
        Codec::Json => quote!(#k::codec::Json),
        Codec::Proto => quote!(#k::codec::Proto),
    }
}

fn emit_client(item: &ItemTrait, svc: &Service) -> TokenStream {
    let k = &svc.krate;
    let vis = &item.vis;
    let trait_ident = &item.ident;
    let client = format_ident!("{}Client", trait_ident);
    let doc = format!(
        "Client for the [`{trait_ident}`] service: one async method per trait method, \
         each returning the result or a typed error. Cheap to clone; clones share the connection."
    );
    let methods = svc.methods.iter().map(|m| client_method(svc, m));
    let names = svc.methods.iter().map(|m| &m.wire_name);
    quote! {
        #[doc = #doc]
        #[derive(::core::clone::Clone, ::core::fmt::Debug)]
        #vis struct #client {
            client: #k::rpc::Client,
            options: #k::rpc::CallOptions,
        }

        impl #client {
            /// A client over an RPC client (sharing its connection).
            #vis fn new(client: #k::rpc::Client) -> Self {
                Self {
                    client,
                    options: <#k::rpc::CallOptions as ::core::default::Default>::default(),
                }
            }

            /// A client over a connected socket (for example an end of `uds::net::pair()`).
            #vis fn from_conn(conn: #k::net::Conn) -> Self {
                Self::new(#k::rpc::Client::new(conn))
            }

            /// Connects to the server at `path`, with the default checks of
            /// `uds::net::Connector` (socket owner and mode, server uid).
            #vis async fn connect(
                path: impl ::core::convert::AsRef<::std::path::Path>,
            ) -> ::core::result::Result<Self, #k::net::NetError> {
                ::core::result::Result::Ok(Self::new(#k::rpc::Client::connect(path).await?))
            }

            /// The same client with other per-call options (e.g. a timeout).
            #vis fn with_options(mut self, options: #k::rpc::CallOptions) -> Self {
                self.options = options;
                self
            }

            /// The underlying RPC client.
            #vis fn rpc(&self) -> &#k::rpc::Client {
                &self.client
            }

            #(#methods)*
        }

        impl #k::plugin::PluginClient for #client {
            const SERVICE: &'static str = ::core::stringify!(#trait_ident);
            const METHODS: &'static [&'static str] = &[#(#names),*];

            fn from_rpc(client: #k::rpc::Client) -> Self {
                Self::new(client)
            }
        }
    }
}

fn encode_args(svc: &Service, m: &Method) -> TokenStream {
    let k = &svc.krate;
    let codec = codec_path(svc);
    match (svc.codec, m.args.as_slice()) {
        // No argument: JSON `null` (Go JSON handlers cannot decode empty
        // data); an empty protobuf message.
        (Codec::Json, []) => quote!(#k::__private01::Bytes::from_static(b"null")),
        (Codec::Proto, []) => quote!(#k::__private01::Bytes::new()),
        (_, [(a, t)]) => quote_spanned!(t.span()=> #k::__private01::encode_arg::<#codec, #t>(&#a)?),
        (_, many) => {
            let adds = many.iter().map(|(a, _)| {
                let name = a.unraw().to_string();
                quote!(.arg(#name, &#a)?)
            });
            quote!(#k::__private01::JsonArgs::new() #(#adds)* .finish()?)
        }
    }
}

fn client_method(svc: &Service, m: &Method) -> TokenStream {
    let (l_data, l_s) = (local("__data"), local("__s"));
    let k = &svc.krate;
    let codec = codec_path(svc);
    let ident = &m.ident;
    let wire = &m.wire_name;
    let docs = &m.docs;
    let params = m.args.iter().map(|(a, t)| quote!(#a: #t));
    let data = encode_args(svc, m);
    let call = quote!(self.client.call_with(#wire, #l_data, self.options).await);
    let (ret, body) = match &m.ret {
        Ret::Unit => (
            quote!(::core::result::Result<(), #k::rpc::RpcError>),
            quote! { #call?; ::core::result::Result::Ok(()) },
        ),
        Ret::Plain(t) => {
            let decode = quote_spanned!(t.span()=> #k::__private01::decode_reply::<#codec, #t>);
            (
                quote!(::core::result::Result<#t, #k::rpc::RpcError>),
                quote! { #decode(#call?) },
            )
        }
        Ret::Result(t, e) => {
            let map = quote_spanned!(e.span()=> #k::__private01::app_reply::<#codec, #t, #e>);
            (
                quote!(::core::result::Result<#t, #k::CallError<#e>>),
                quote! { #map(#call) },
            )
        }
        Ret::Stream(t) => {
            let wrap = quote_spanned!(t.span()=> #k::__private01::client_stream::<#codec, #t>);
            (
                quote!(::core::result::Result<#k::Streaming<#t>, #k::rpc::RpcError>),
                quote! {
                    let #l_s = self.client.call_stream(#wire, #l_data, self.options).await?;
                    ::core::result::Result::Ok(#wrap(#l_s))
                },
            )
        }
    };
    let wire_doc = format!("Calls `{wire}` on the server.");
    quote! {
        #(#docs)*
        #[doc = ""]
        #[doc = #wire_doc]
        pub async fn #ident(&self, #(#params),*) -> #ret {
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
    let names = svc.methods.iter().map(|m| &m.wire_name);
    quote! {
        #[doc = #doc]
        #vis struct #server<#ty> {
            imp: ::std::sync::Arc<#ty>,
        }

        impl<#ty> ::core::clone::Clone for #server<#ty> {
            fn clone(&self) -> Self {
                Self { imp: <::std::sync::Arc<#ty> as ::core::clone::Clone>::clone(&self.imp) }
            }
        }

        impl<#ty> ::core::fmt::Debug for #server<#ty> {
            fn fmt(&self, f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                f.debug_struct(::core::stringify!(#server)).finish_non_exhaustive()
            }
        }

        impl<#ty: #trait_ident + ::core::marker::Send + ::core::marker::Sync + 'static> #server<#ty> {
            /// The wire names of the service's methods.
            #vis const METHODS: &'static [&'static str] = &[#(#names),*];

            /// Serves `imp`.
            #vis fn new(imp: #ty) -> Self {
                Self { imp: ::std::sync::Arc::new(imp) }
            }

            /// Serves a shared `imp`.
            #vis fn from_arc(imp: ::std::sync::Arc<#ty>) -> Self {
                Self { imp }
            }

            /// Registers every method on `builder`.
            #vis fn register(&self, builder: #k::rpc::ServerBuilder) -> #k::rpc::ServerBuilder {
                #(#registrations)*
                builder
            }

            /// A server with the default settings that serves this service.
            #vis fn build(&self) -> ::core::result::Result<#k::rpc::Server, #k::rpc::BuildError> {
                self.register(#k::rpc::Server::builder()).build()
            }
        }

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

fn register_method(svc: &Service, trait_ident: &syn::Ident, m: &Method) -> TokenStream {
    let ty = local("__UdsImpl");
    let (l_data, l_args, l_imp, l_ctx) = (
        local("__data"),
        local("__args"),
        local("__imp"),
        local("__ctx"),
    );
    let (l_out, l_v, l_e, l_s) = (local("__out"), local("__v"), local("__e"), local("__s"));
    let k = &svc.krate;
    let codec = codec_path(svc);
    let ident = &m.ident;
    let wire = &m.wire_name;
    let decode = match (svc.codec, m.args.as_slice()) {
        (_, []) => quote!(let _ = #l_data;),
        (_, [(a, t)]) => {
            quote_spanned!(t.span()=> let #a: #t = #k::__private01::decode_arg::<#codec, #t>(#l_data)?;)
        }
        (_, many) => {
            let takes = many.iter().map(|(a, t)| {
                let name = a.unraw().to_string();
                quote!(let #a: #t = #l_args.take(#name)?;)
            });
            quote! {
                let mut #l_args = #k::__private01::JsonArgs::parse(&#l_data)?;
                #(#takes)*
            }
        }
    };
    let ctx_arg = m.has_ctx.then(|| quote!(&#l_ctx,));
    let args = m.args.iter().map(|(a, _)| a);
    let invoke = quote!(<#ty as #trait_ident>::#ident(&*#l_imp, #ctx_arg #(#args),*).await);
    let (register, result) = match &m.ret {
        Ret::Unit => (quote!(handler), {
            // No result: JSON `null` (the Go JSON client cannot decode
            // empty data); an empty protobuf message.
            let empty = match svc.codec {
                Codec::Json => quote!(#k::__private01::Bytes::from_static(b"null")),
                Codec::Proto => quote!(#k::__private01::Bytes::new()),
            };
            quote! { let () = #invoke; ::core::result::Result::Ok(#empty) }
        }),
        Ret::Plain(t) => {
            let encode = quote_spanned!(t.span()=> #k::__private01::encode_result::<#codec, #t>);
            (
                quote!(handler),
                quote! { let #l_out: #t = #invoke; #encode(&#l_out) },
            )
        }
        Ret::Result(t, e) => {
            let ok = quote_spanned!(t.span()=> #k::__private01::encode_result::<#codec, #t>);
            let err = quote_spanned!(e.span()=> #k::__private01::app_error::<#codec, #e>);
            (
                quote!(handler),
                quote! {
                    match #invoke {
                        ::core::result::Result::Ok(#l_v) => #ok(&#l_v),
                        ::core::result::Result::Err(#l_e) => ::core::result::Result::Err(#err(&#l_e)),
                    }
                },
            )
        }
        Ret::Stream(t) => {
            let encode = quote_spanned!(t.span()=> #k::__private01::encode_stream::<#codec, #t>);
            (
                quote!(streaming),
                quote! {
                    let #l_s = #invoke;
                    ::core::result::Result::Ok(#encode(#l_s))
                },
            )
        }
    };
    quote! {
        let builder = {
            let #l_imp = <::std::sync::Arc<#ty> as ::core::clone::Clone>::clone(&self.imp);
            builder.#register(#wire, move |#l_ctx: #k::rpc::Context, #l_data: #k::__private01::Bytes| {
                let #l_imp = <::std::sync::Arc<#ty> as ::core::clone::Clone>::clone(&#l_imp);
                async move {
                    let _ = &#l_ctx;
                    #decode
                    #result
                }
            })
        };
    }
}

/// For a proto service: every argument, result, error and stream item type
/// must be a `prost::Message`, checked on the type itself so the error points
/// at it.
fn emit_type_checks(svc: &Service) -> TokenStream {
    if svc.codec != Codec::Proto {
        return TokenStream::new();
    }
    let k = &svc.krate;
    let mut types: Vec<&Type> = Vec::new();
    for m in &svc.methods {
        types.extend(m.args.iter().map(|(_, t)| t));
        match &m.ret {
            Ret::Unit => {}
            Ret::Plain(t) | Ret::Stream(t) => types.push(&**t),
            Ret::Result(t, e) => {
                types.push(&**t);
                types.push(&**e);
            }
        }
    }
    let checks = types.into_iter().map(|t| {
        quote_spanned! {t.span()=>
            const _: () = #k::__private01::assert_proto_message::<#t>();
        }
    });
    quote!(#(#checks)*)
}
