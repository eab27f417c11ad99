use std::process::ExitCode;

fn main() -> ExitCode {
    match facemark::cli::main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // The whole cause chain on one line, without a backtrace: what
            // went wrong and where (file, line, offset) is in the messages.
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
