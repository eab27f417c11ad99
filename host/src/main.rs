use std::process::ExitCode;

// burn allocates and frees megabyte tensors on every training step; with
// glibc, page faults on those fresh buffers were 12% of a step's profile.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
