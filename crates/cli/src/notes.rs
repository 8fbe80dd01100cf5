//! Notes for the user on stderr, each printed once per run.

use std::collections::HashSet;
use std::sync::Mutex;

static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Prints every note not printed before, as `note: ...` on stderr.
pub fn print<S: AsRef<str>>(notes: &[S]) {
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let seen = seen.get_or_insert_with(HashSet::new);
    for n in notes {
        if seen.insert(n.as_ref().to_owned()) {
            eprintln!("note: {}", n.as_ref());
        }
    }
}
