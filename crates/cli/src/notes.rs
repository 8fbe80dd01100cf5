//! Notes for the user on stderr, each printed once per run.

use std::collections::HashSet;
use std::sync::Mutex;

static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);

/// Prints every note not printed before, as `note: ...` on stderr.
pub fn print<S: AsRef<str>>(notes: &[S]) {
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    for n in fresh(seen.get_or_insert_with(HashSet::new), notes) {
        eprintln!("note: {}", fair_pipeline::printable(n));
    }
}

/// The notes of `notes` not in `seen`, in order and each once; records them in `seen`.
fn fresh<'a, S: AsRef<str>>(seen: &mut HashSet<String>, notes: &'a [S]) -> Vec<&'a str> {
    notes
        .iter()
        .map(AsRef::as_ref)
        .filter(|n| seen.insert((*n).to_owned()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_note_is_printed_once_per_run() {
        let mut seen = HashSet::new();
        // The same note from the data source and from two criteria.
        assert_eq!(fresh(&mut seen, &["a", "b", "a"]), ["a", "b"]);
        assert_eq!(fresh(&mut seen, &["b", "c"]), ["c"]);
        assert!(fresh(&mut seen, &["a", "c"]).is_empty());
    }
}
