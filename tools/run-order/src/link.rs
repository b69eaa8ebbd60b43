//! The linker step that lays out the run path: a wrapper around lld for the `monovirt`
//! binary (build.rs installs it), which maps the hash-free keys of `link/run.order` (see
//! [`crate::key`]) onto the symbols this link's input files define, writes them as a
//! concrete symbol-ordering file and runs lld with `--symbol-ordering-file`. So every
//! build of the binary (cargo build, cargo bench, another profile or feature set) gets
//! the recorded layout, whatever hashes its symbol names carry.
//!
//! It never fails a link on its own account: if the order cannot be read or an input
//! cannot be parsed, it says so on stderr and runs lld with the arguments it was given.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// How many of an order's functions a link found, and the symbols they became.
#[derive(Debug, PartialEq, Eq)]
pub struct Mapped {
    /// The functions (lines) in the order file.
    pub entries: usize,
    /// The functions this link has.
    pub matched: usize,
    /// The concrete names, in order, each once.
    pub symbols: Vec<String>,
}

/// At most this many symbols stand for one recorded function none of whose size is
/// the recorded one: more are instances of some generic function the order cannot tell
/// apart, and would bring cold code into the run path's pages.
const MAX_UNSIZED: usize = 4;

/// One line of an order file: a function's key, its size in bytes and the names it had
/// in the builds it was recorded in.
#[derive(Debug, PartialEq, Eq)]
struct Entry<'a> {
    key: &'a str,
    size: Option<u64>,
    names: Vec<&'a str>,
}

fn entry(line: &str) -> Entry<'_> {
    let mut words = line.split_whitespace();
    let key = words.next().unwrap_or_default();
    let size = words.next().and_then(|s| s.parse().ok());
    Entry {
        key,
        size,
        names: words.collect(),
    }
}

/// Maps `order` (one function per line: its key, then optionally its size and its
/// recorded names; blank lines and `#` comments skipped) onto the functions the
/// `inputs` define. An input that is not an object or archive adds none.
///
/// A build with the recorded names (the same profile, features and dependencies) gets
/// exactly those. Otherwise the key decides, but the instances of a generic function
/// share one, so a key can name hundreds of symbols (`Vec<T>::drop`): the ones of the
/// recorded size stand for it, or, if none has that size (changed code), all of them if
/// they are few ([`MAX_UNSIZED`]).
pub fn map(order: &str, inputs: &[PathBuf]) -> io::Result<Mapped> {
    let entries: Vec<Entry> = order
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(entry)
        .collect();
    let mut candidates: HashMap<&str, Vec<(String, u64)>> =
        entries.iter().map(|e| (e.key, Vec::new())).collect();
    for input in inputs {
        crate::objects::functions(input, &mut |name, size| {
            if let Some(found) = candidates.get_mut(&*crate::key::key(name)) {
                if !found.iter().any(|(n, _)| n == name) {
                    found.push((name.to_string(), size));
                }
            }
        })
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", input.display())))?;
    }
    Ok(resolve(&entries, &candidates))
}

/// The symbols standing for each of `entries`, given every symbol of each key and its
/// size (see [`map`]).
fn resolve(entries: &[Entry], candidates: &HashMap<&str, Vec<(String, u64)>>) -> Mapped {
    let mut seen = HashSet::new();
    let mut symbols = Vec::new();
    let mut matched = 0;
    for Entry { key, size, names } in entries {
        let all = candidates.get(key).map_or(&[][..], Vec::as_slice);
        let exact: Vec<&(String, u64)> = all
            .iter()
            .filter(|(n, _)| names.contains(&n.as_str()))
            .collect();
        let sized: Vec<&(String, u64)> = all.iter().filter(|(_, s)| Some(*s) == *size).collect();
        let chosen: Vec<&(String, u64)> = if !exact.is_empty() {
            exact
        } else if !sized.is_empty() {
            sized
        } else if size.is_none() || all.len() <= MAX_UNSIZED {
            all.iter().collect()
        } else {
            Vec::new()
        };
        if !chosen.is_empty() {
            matched += 1;
        }
        for (name, _) in chosen {
            if seen.insert(name.as_str()) {
                symbols.push(name.clone());
            }
        }
    }
    Mapped {
        entries: entries.len(),
        matched,
        symbols,
    }
}

/// The files among a GNU-style linker command line's arguments (`@file` response files
/// expanded): every argument that is not an option and names an existing file. Option
/// values (`-o OUT`, `-dynamic-linker PATH`) may be among them; [`map`] reads only
/// relocatable objects and archives, which such values are not.
pub fn input_files(args: &[OsString]) -> io::Result<Vec<PathBuf>> {
    let mut files = Vec::new();
    for arg in args {
        let bytes = arg.as_bytes();
        if let Some(rsp) = bytes.strip_prefix(b"@") {
            let text = std::fs::read(OsStr::from_bytes(rsp))?;
            files.extend(input_files(&response_args(&text))?);
        } else if !bytes.starts_with(b"-") && Path::new(arg).is_file() {
            files.push(PathBuf::from(arg));
        }
    }
    Ok(files)
}

/// The arguments of a GNU response file: separated by white space, quoted with `'` or
/// `"`, `\` escaping the next byte.
fn response_args(text: &[u8]) -> Vec<OsString> {
    let mut args = Vec::new();
    let mut cur: Option<Vec<u8>> = None;
    let mut quote = None;
    let mut bytes = text.iter().copied();
    while let Some(b) = bytes.next() {
        match (b, quote) {
            (b'\\', _) => {
                if let Some(next) = bytes.next() {
                    cur.get_or_insert_with(Vec::new).push(next);
                }
            }
            (q, Some(open)) if q == open => quote = None,
            (b'\'' | b'"', None) => {
                quote = Some(b);
                cur.get_or_insert_with(Vec::new);
            }
            (b, None) if b.is_ascii_whitespace() => {
                if let Some(arg) = cur.take() {
                    args.push(OsString::from(OsStr::from_bytes(&arg)));
                }
            }
            (b, _) => cur.get_or_insert_with(Vec::new).push(b),
        }
    }
    if let Some(arg) = cur {
        args.push(OsString::from(OsStr::from_bytes(&arg)));
    }
    args
}

/// `ORDER LLD OUT_DIR ARGS…`: links with lld at `LLD` and `ARGS`, laid out by the keys
/// in `ORDER`; the concrete ordering file and a one-line summary go to `OUT_DIR`.
/// Returns only if lld cannot be run.
pub fn main(mut args: impl Iterator<Item = OsString>) -> io::Error {
    let (Some(order), Some(lld), Some(out_dir)) = (args.next(), args.next(), args.next()) else {
        return io::Error::other("usage: ORDER LLD OUT_DIR LINKER-ARGS...");
    };
    let mut args: Vec<OsString> = args.collect();
    let order = Path::new(&order);
    match input_files(&args) {
        // A link without input objects (build.rs's probe, `--version`): as it is.
        Ok(inputs) if inputs.is_empty() => {}
        inputs => match ordering(order, inputs, Path::new(&out_dir)) {
            Ok((file, mapped)) => {
                let mut flag = OsString::from("--symbol-ordering-file=");
                flag.push(file);
                args.push(flag);
                args.push("--no-warn-symbol-ordering".into());
                if mapped.matched * 4 < mapped.entries * 3 {
                    let _ = writeln!(
                        io::stderr(),
                        "only {} of the {} functions in {} are in this link: re-record it with scripts/run-order.sh",
                        mapped.matched,
                        mapped.entries,
                        order.display()
                    );
                }
            }
            Err(e) => {
                let _ = writeln!(
                    io::stderr(),
                    "the run-path layout ({}) is not applied, the link keeps the default order: {e}",
                    order.display()
                );
            }
        },
    }
    Command::new(lld).args(args).exec()
}

/// Maps the order onto `inputs`, writes the ordering file into `out_dir`; its path and
/// what matched.
fn ordering(
    order: &Path,
    inputs: io::Result<Vec<PathBuf>>,
    out_dir: &Path,
) -> io::Result<(PathBuf, Mapped)> {
    let text = std::fs::read_to_string(order)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", order.display())))?;
    let mapped = map(&text, &inputs?)?;
    let file = out_dir.join("run-path.order");
    let mut out = String::new();
    for name in &mapped.symbols {
        out.push_str(name);
        out.push('\n');
    }
    std::fs::write(&file, out)?;
    std::fs::write(
        out_dir.join("run-path.summary"),
        format!(
            "{} of the {} functions in {} matched: {} symbols\n",
            mapped.matched,
            mapped.entries,
            order.display(),
            mapped.symbols.len()
        ),
    )?;
    Ok((file, mapped))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_names_else_sizes_tell_generic_instances_apart() {
        let order = "a::f 10\nvec::grow 100\nvec::grow 120\nb::g 7\nc::h\nmissing 5\nvec::grow 100 g5 old\n";
        let entries: Vec<_> = order.lines().map(entry).collect();
        assert_eq!(
            entries[6],
            Entry {
                key: "vec::grow",
                size: Some(100),
                names: vec!["g5", "old"]
            }
        );
        assert_eq!((entries[4].key, entries[4].size), ("c::h", None));
        let sym = |n: &str, size| (n.to_string(), size);
        let candidates: HashMap<&str, Vec<(String, u64)>> = [
            // One instance, another size now: still it.
            ("a::f", vec![sym("f1", 12)]),
            // Six instances, two of each recorded size: those four.
            (
                "vec::grow",
                vec![
                    sym("g1", 100),
                    sym("g2", 90),
                    sym("g3", 120),
                    sym("g4", 100),
                    sym("g5", 90),
                    sym("g6", 120),
                ],
            ),
            // Five instances, none of the recorded size: too many to guess.
            ("b::g", (0..5).map(|i| sym(&format!("h{i}"), 8)).collect()),
            // No size recorded: all.
            ("c::h", vec![sym("c1", 1), sym("c2", 2)]),
            ("missing", vec![]),
        ]
        .into_iter()
        .collect();
        let mapped = resolve(&entries, &candidates);
        assert_eq!(mapped.entries, 7);
        assert_eq!(mapped.matched, 5);
        // The recorded name, when the link has it, is the one (whatever its size now).
        assert_eq!(
            mapped.symbols,
            ["f1", "g1", "g4", "g3", "g6", "c1", "c2", "g5"]
        );
    }

    #[test]
    fn response_files_split_like_gnu_tools() {
        let args = response_args(b"-o 'out dir/a' \"b c\" d\\ e\n@x  \n");
        let args: Vec<_> = args.iter().map(|a| a.to_str().expect("utf-8")).collect();
        assert_eq!(args, ["-o", "out dir/a", "b c", "d e", "@x"]);
        assert_eq!(response_args(b"''"), [OsString::new()]);
    }

    #[test]
    fn maps_keys_onto_the_inputs_symbols() {
        let std_rlib = std::fs::read_dir(
            String::from_utf8(
                Command::new("rustc")
                    .args(["--print", "target-libdir"])
                    .output()
                    .expect("rustc")
                    .stdout,
            )
            .expect("utf-8")
            .trim(),
        )
        .expect("libdir")
        .map(|e| e.expect("entry").path())
        .find(|p| {
            p.to_string_lossy().contains("/libstd-") && p.extension() == Some("rlib".as_ref())
        })
        .expect("libstd");
        let dir = std::env::temp_dir().join(format!("run-order-link-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let rsp = dir.join("args");
        std::fs::write(
            &rsp,
            format!("-o '{}' --gc-sections\n", dir.join("out").display()),
        )
        .expect("write");
        // The rlib through a response file; the missing output and options are no input.
        let inputs = input_files(&[
            OsString::from(format!("@{}", rsp.display())),
            "-L".into(),
            std_rlib.clone().into(),
            "-lc".into(),
        ])
        .expect("inputs");
        assert_eq!(inputs, [std_rlib]);
        // Another size than recorded, but the one instance there is; listed again
        // without a size, it is still named once.
        let order =
            "# comment\n\n_RNvNtC3std3env7args_os 1\nno_such_function 2\n_RNvNtC3std3env7args_os\n";
        let mapped = map(order, &inputs).expect("map");
        assert_eq!((mapped.entries, mapped.matched), (3, 2));
        assert_eq!(mapped.symbols.len(), 1);
        assert!(mapped.symbols[0].starts_with("_RNvNtCs"), "{mapped:?}");
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
