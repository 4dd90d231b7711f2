//! Adds an rpath to libtorch so binaries and tests run without `LD_LIBRARY_PATH`, and keeps
//! libtorch_cuda linked (the linker's --as-needed would drop it, hiding every GPU).
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
        // Dependents (the tests crate) read this to add the same rpath.
        println!("cargo:libtorch_lib={lib}");
    }
}
