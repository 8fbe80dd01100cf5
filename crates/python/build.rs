//! Link settings of the Python extension: libtorch is found next to the user's `torch`
//! package at run time.

fn main() {
    // The extension lies in `site-packages/fair_pruner/`; the torch wheel's libraries in
    // `site-packages/torch/lib/`. `import fair_pruner` imports torch first, which loads them,
    // so this run path is only the fallback for a bare `import fair_pruner._native`.
    println!("cargo:rustc-link-arg-cdylib=-Wl,-rpath,$ORIGIN/../torch/lib");
}
