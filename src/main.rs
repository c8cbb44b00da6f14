//! The `lcode` binary: everything is in the library; `cli` parses and dispatches.

fn main() -> std::process::ExitCode {
    lcode::cli::main()
}
