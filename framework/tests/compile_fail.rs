//! Compile-fail tests: what a user reads for the usual mistakes with messages, `remote_actor!`
//! and `#[derive(RemoteMessage)]`. The expected compiler output is in `tests/ui/**/*.stderr`;
//! after a deliberate change, regenerate it with `TRYBUILD=overwrite cargo test -p actormesh
//! --test compile_fail` and read the diff: each message must still say what to do.

#[test]
fn compile_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
    t.compile_fail("tests/ui/derive/*.rs");
    t.pass("tests/ui_pass/*.rs");
}
