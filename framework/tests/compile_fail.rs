//! Compile-fail tests: the errors a user sees for the usual mistakes.
#[test]
fn compile_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
