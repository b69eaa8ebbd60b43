//! The hash-free key of a Rust symbol name: what stays the same when the same function
//! is compiled again with another profile, feature set or dependency graph. The names
//! themselves change then: legacy-mangled names (`_ZN…17h<hash>E`) end with a hash of
//! the instance and its crates' disambiguators, v0 names (`_R…`) carry the crates'
//! disambiguators (`Cs<hash>_`) and byte offsets of back-references that shift with
//! them, and LLVM appends `.llvm.<number>` to the names it promotes across codegen units.
//!
//! A key is not a demangling, only a name that is the same for the same function in
//! two builds and rarely the same for two functions. The legacy scheme does not name a
//! generic function's type arguments, so its instances share one key (`Vec<T>::push`
//! for every `T`); so may two v0 names that differ only in what a back-reference points
//! at. A symbol-ordering file of keys (`link/run.order`) then moves a few functions more
//! than the recorded run executed, never fewer.

use std::borrow::Cow;

/// The key of `symbol` (other names, C's, are their own key).
pub fn key(symbol: &str) -> Cow<'_, str> {
    let name = strip_llvm_suffix(symbol);
    if name.starts_with("_ZN") {
        // `…17h` + 16 hex digits + `E`: the hash is the last path element.
        let bytes = name.as_bytes();
        if let Some(hash_at) = name.len().checked_sub(20) {
            let (path, hash) = (&name[..hash_at], &bytes[hash_at..]);
            if hash.starts_with(b"17h")
                && hash.ends_with(b"E")
                && hash[3..19].iter().all(u8::is_ascii_hexdigit)
            {
                return Cow::Borrowed(path);
            }
        }
        Cow::Borrowed(name)
    } else if let Some(v0) = name.strip_prefix("_R") {
        Cow::Owned(format!("_R{}", strip_v0_hashes(v0)))
    } else {
        Cow::Borrowed(name)
    }
}

/// `name` without LLVM's `.llvm.<digits>` suffix.
fn strip_llvm_suffix(name: &str) -> &str {
    match name.find(".llvm.") {
        Some(i) if name[i + 6..].bytes().all(|b| b.is_ascii_hexdigit()) => &name[..i],
        _ => name,
    }
}

/// A v0 name (after `_R`) with each crate root's disambiguator dropped (`Cs<b62>_` →
/// `C`) and each back-reference's offset (`B<b62>_` → `B_`). A plain left-to-right
/// rewrite, no parse: where it also rewrites bytes of an identifier, it does so in both
/// builds alike, since what differs between them (the base-62 numbers) always ends
/// at the `_` that ends such a match.
fn strip_v0_hashes(v0: &str) -> String {
    let b = v0.as_bytes();
    let mut out = String::with_capacity(v0.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        // Where a base-62 number starting at `from` ends with its `_`, if it does.
        let number_end = |from: usize| {
            let digits = b[from..]
                .iter()
                .take_while(|c| c.is_ascii_alphanumeric())
                .count();
            (b.get(from + digits) == Some(&b'_')).then_some(from + digits + 1)
        };
        if c == b'C' && b.get(i + 1) == Some(&b's') {
            if let Some(end) = number_end(i + 2) {
                out.push('C');
                i = end;
                continue;
            }
        }
        if c == b'B' {
            if let Some(end) = number_end(i + 1) {
                out.push_str("B_");
                i = end;
                continue;
            }
        }
        out.push(c as char);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_names_lose_their_hash_and_llvm_suffix() {
        assert_eq!(
            key("_ZN8monovirt4main17h5971f9a1212967eaE"),
            "_ZN8monovirt4main"
        );
        assert_eq!(
            key("_ZN3std2rt10lang_start28_$u7b$$u7b$closure$u7d$$u7d$17h3dd5b1dfce8109caE.llvm.16457366173836630046"),
            "_ZN3std2rt10lang_start28_$u7b$$u7b$closure$u7d$$u7d$"
        );
        // Two builds of one function: one key.
        assert_eq!(
            key("_ZN5tokio7runtime4park5Inner4park17h0123456789abcdefE"),
            key("_ZN5tokio7runtime4park5Inner4park17hfedcba9876543210E.llvm.42")
        );
        // Not a hash element: unchanged.
        assert_eq!(key("_ZN3foo3barE"), "_ZN3foo3barE");
    }

    #[test]
    fn v0_names_lose_crate_disambiguators_and_backref_offsets() {
        let a = "_RNvNtCsjrHSEGnQ3l9_3std3env7args_os";
        let b = "_RNvNtCs1a2B3_3std3env7args_os";
        assert_eq!(key(a), "_RNvNtC3std3env7args_os");
        assert_eq!(key(a), key(b));
        // A shorter disambiguator moves what back-references point at.
        let a = "_RINvNtCsgEmfK2I1SDS_4core3ptr13drop_in_placeNtNtB4_4cell4CellECsjrHSEGnQ3l9_3std";
        let b = "_RINvNtCsgEm_4core3ptr13drop_in_placeNtNtB3_4cell4CellECsjr_3std";
        assert_eq!(key(a), key(b));
        assert_eq!(
            key(a),
            "_RINvNtC4core3ptr13drop_in_placeNtNtB_4cell4CellEC3std"
        );
    }

    #[test]
    fn other_names_are_their_own_key() {
        for name in ["main", "_start", "frame_dummy", "memcpy@GLIBC_2.14"] {
            assert_eq!(key(name), name);
        }
    }
}
