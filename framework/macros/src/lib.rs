//! Derive macros of actormesh. Use them through `actormesh`, which re-exports them.
use proc_macro::TokenStream;

/// See `actormesh::RemoteMessage`.
#[proc_macro_derive(RemoteMessage, attributes(remote))]
pub fn derive_remote_message(input: TokenStream) -> TokenStream {
    let _ = input;
    TokenStream::new()
}
