//! How long work reports without printing (ripgrep's rule: the library
//! never prints or exits). Library functions call a [`Progress`]; the CLI's
//! draws bars and lines on stderr, tests and quiet callers pass [`Silent`].

/// Where a long computation says how far it is and what it noticed.
pub trait Progress: Sync {
    /// A stage of `steps` steps begins; `what` names it.
    fn begin(&self, _what: &str, _steps: u64) {}
    /// `n` more steps of the stage are done; `status` (a running loss, say)
    /// is shown beside the count.
    fn advance(&self, _n: u64, _status: Option<&str>) {}
    /// The stage is over.
    fn end(&self) {}
    /// A line worth showing the user: a warning or a stage's result.
    fn note(&self, _line: &str) {}
}

/// Reports nothing.
pub struct Silent;

impl Progress for Silent {}
