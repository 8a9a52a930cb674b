//! The derive macro of actormesh, `#[derive(RemoteMessage)]`.
//!
//! Use it through the `actormesh` crate, which re-exports it beside the trait of the same name
//! (as serde does): `use actormesh::RemoteMessage;` brings both. The generated code names
//! everything through `::actormesh::__private`, so a crate that derives needs `actormesh` and
//! serde, not `actix`.

use proc_macro::TokenStream;
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{quote, quote_spanned};
use syn::parse::ParseStream;
use syn::spanned::Spanned;
use syn::{parse_macro_input, DeriveInput, Error, LitStr, Token, Type};

/// Implements actix `Message` and actormesh `RemoteMessage` for a message type.
///
/// ```text
/// #[derive(RemoteMessage, Serialize, Deserialize)]
/// #[remote(name = "chat.Post", result = "u64")]
/// struct Post { text: String }
/// ```
///
/// - `name` (required): the stable wire name, `RemoteMessage::NAME`.
/// - `result` (optional): the type of the reply, `Message::Result`; `()` when omitted. A string
///   (`result = "Vec<u8>"`, as actix's `rtype`) or a type (`result = Vec<u8>`).
///
/// The type must not be generic: a remote message has one wire name, which every instantiation
/// would share.
#[proc_macro_derive(RemoteMessage, attributes(remote))]
pub fn derive_remote_message(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand(&input)
        .unwrap_or_else(Error::into_compile_error)
        .into()
}

/// What `#[remote(...)]` says.
struct Remote {
    name: LitStr,
    result: Option<Type>,
}

const USAGE: &str = "expected `#[remote(name = \"service.Message\")]`, or \
                     `#[remote(name = \"service.Message\", result = \"ReplyType\")]`";

fn expand(input: &DeriveInput) -> syn::Result<TokenStream2> {
    if !input.generics.params.is_empty() {
        return Err(Error::new(
            input.generics.span(),
            "`#[derive(RemoteMessage)]` does not support generic types: a remote message has one \
             wire name, which every instantiation would share; derive it for a concrete type, or \
             implement `Message` and `RemoteMessage` by hand with a distinct `NAME` for each \
             instantiation",
        ));
    }
    let remote = parse_remote(input)?;
    let ident = &input.ident;
    let where_clause = &input.generics.where_clause;
    let name = &remote.name;
    let result = match &remote.result {
        Some(ty) => quote!(#ty),
        None => quote!(()),
    };
    // Checked on its own, with the span of the `result` value, so that a reply type that cannot
    // cross the wire is reported where it is written.
    let result_check = remote.result.as_ref().map(|ty| {
        quote_spanned! {ty.span()=>
            const _: () = ::actormesh::__private::assert_wire_value::<#ty>();
        }
    });
    Ok(quote! {
        #result_check
        impl ::actormesh::__private::actix::Message for #ident #where_clause {
            type Result = #result;
        }
        impl ::actormesh::__private::RemoteMessage for #ident #where_clause {
            const NAME: &'static str = #name;
        }
    })
}

/// Reads every `#[remote(...)]` attribute of the type.
fn parse_remote(input: &DeriveInput) -> syn::Result<Remote> {
    let mut name: Option<LitStr> = None;
    let mut result: Option<Type> = None;
    for attr in &input.attrs {
        if !attr.path().is_ident("remote") {
            continue;
        }
        if !matches!(attr.meta, syn::Meta::List(_)) {
            return Err(Error::new_spanned(attr, USAGE));
        }
        attr.parse_nested_meta(|meta| {
            let key = meta.path.get_ident().map(|i| i.to_string());
            match key.as_deref() {
                Some("name") => {
                    if name.is_some() {
                        return Err(meta.error("`name` is given twice"));
                    }
                    name = Some(parse_name(expect_eq(&meta, "name")?)?);
                }
                Some("result") => {
                    if result.is_some() {
                        return Err(meta.error("`result` is given twice"));
                    }
                    result = Some(parse_result(expect_eq(&meta, "result")?)?);
                }
                _ => {
                    let path = &meta.path;
                    let key = quote!(#path).to_string().replace(' ', "");
                    return Err(meta.error(format!(
                        "unknown key `{key}` in `#[remote(...)]`: the keys are `name` (the \
                         stable wire name, required) and `result` (the reply type, `()` when \
                         omitted)"
                    )));
                }
            }
            Ok(())
        })?;
    }
    let Some(name) = name else {
        return Err(Error::new(
            Span::call_site(),
            format!(
                "missing wire name for `{}`: add `#[remote(name = \"service.{}\")]` with a name \
                 that stays the same for as long as any node may send or receive this message",
                input.ident, input.ident
            ),
        ));
    };
    Ok(Remote { name, result })
}

/// The value after `key =`.
fn expect_eq<'a>(meta: &syn::meta::ParseNestedMeta<'a>, key: &str) -> syn::Result<ParseStream<'a>> {
    if !meta.input.peek(Token![=]) {
        return Err(meta.error(format!("`{key}` needs a value (`{key} = ...`); {USAGE}")));
    }
    meta.value()
}

fn parse_name(value: ParseStream<'_>) -> syn::Result<LitStr> {
    let expr: syn::Expr = value.parse()?;
    let syn::Expr::Lit(syn::ExprLit {
        lit: syn::Lit::Str(name),
        ..
    }) = expr
    else {
        return Err(Error::new_spanned(
            expr,
            "the wire name must be a string literal, e.g. `name = \"chat.Post\"`",
        ));
    };
    if name.value().trim().is_empty() {
        return Err(Error::new_spanned(name, "the wire name must not be empty"));
    }
    Ok(name)
}

fn parse_result(value: ParseStream<'_>) -> syn::Result<Type> {
    if value.peek(LitStr) {
        let text: LitStr = value.parse()?;
        return text.parse::<Type>().map_err(|e| {
            Error::new_spanned(
                &text,
                format!("`result` must name a type, e.g. `result = \"u64\"`: {e}"),
            )
        });
    }
    value.parse::<Type>()
}
