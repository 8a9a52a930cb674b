//! The `actormesh` operator CLI; everything is in the library (see its crate docs for the
//! commands, the options, the spec file format and the exit codes).

fn main() -> std::process::ExitCode {
    actormesh_cli::main()
}
