//! Embed libtorch's folder as an rpath so `bin/nightrec` and the test binary
//! run with no LD_LIBRARY_PATH. `$ORIGIN/lib` lets a binary carried to
//! another machine find libtorch copied next to it.
use std::path::PathBuf;

fn main() {
    // Without this, any file of the package (the README, a bench script)
    // reruns the script and so recompiles the crate.
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/lib");
    if let Ok(dir) = std::env::var("LIBTORCH") {
        let lib = PathBuf::from(dir).join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
    // The linker drops libtorch.so when nothing references it directly, but
    // tch needs its global constructors (CUDA hooks), so keep it.
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
}
