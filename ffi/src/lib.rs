//! The C ABI of dialpool: a thin translation of the core, no logic of its
//! own. The full interface (pools, queries, contexts) arrives with the
//! protocol sessions; for now it exposes the version.

use std::ffi::c_char;

/// The library version as a NUL-terminated string, valid for the life of the
/// process. Never fails; thread-safe.
#[no_mangle]
pub extern "C" fn dp_version() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr() as *const c_char
}

#[cfg(test)]
mod tests {
    #[test]
    fn version_is_a_c_string() {
        // SAFETY: dp_version returns a static NUL-terminated string.
        let v = unsafe { std::ffi::CStr::from_ptr(super::dp_version()) };
        assert_eq!(v.to_str().expect("utf-8"), dialpool::VERSION);
    }
}
