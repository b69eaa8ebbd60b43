//! The function symbols a link's input files define: ELF64 little-endian relocatable
//! objects (`.o`) and `ar` archives of them (`.a`, Rust's `.rlib`). Only the headers,
//! section table, symbol table and its string table are read (positioned reads), not the
//! code: the monovirt binary's inputs are hundreds of megabytes, its symbol tables a
//! small part of that. Anything else (shared libraries, scripts, other ELF classes,
//! thin archives) defines nothing here.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

const AR_MAGIC: &[u8; 8] = b"!<arch>\n";
const AR_HEADER: u64 = 60;
const ELF_HEADER: usize = 64;
const SECTION_HEADER: usize = 64;
const SYMBOL: usize = 24;
const SHT_SYMTAB: u32 = 2;
const STT_FUNC: u8 = 2;
const SHN_UNDEF: u16 = 0;
const ET_REL: u16 = 1;

/// Calls `f` with the name and size of every function `path` defines, an object's or
/// each archive member's in symbol-table order.
pub fn functions(path: &Path, f: &mut impl FnMut(&str, u64)) -> io::Result<()> {
    let file = File::open(path)?;
    let mut magic = [0u8; 8];
    if file.read_at(&mut magic, 0)? < magic.len() {
        return Ok(());
    }
    if &magic == AR_MAGIC {
        let len = file.metadata()?.len();
        let mut at = magic.len() as u64;
        while at + AR_HEADER <= len {
            let mut header = [0u8; AR_HEADER as usize];
            file.read_exact_at(&mut header, at)?;
            if &header[58..60] != b"`\n" {
                return Err(invalid(format!("bad archive member header at {at}")));
            }
            let size: u64 = std::str::from_utf8(&header[48..58])
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| invalid(format!("bad archive member size at {at}")))?;
            let data = at + AR_HEADER;
            object_functions(&file, data, size, f)?;
            // Members are 2-aligned.
            at = data + size + (size & 1);
        }
        Ok(())
    } else {
        object_functions(&file, 0, file.metadata()?.len(), f)
    }
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Reads `len` bytes at `offset` within the object at `base` (`len` checked against the
/// object's `size`).
fn read(file: &File, base: u64, size: u64, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    if offset.checked_add(len).is_none_or(|end| end > size) {
        return Err(invalid(format!(
            "{len} bytes at {offset} lie outside an object of {size} bytes"
        )));
    }
    let mut buf = vec![0u8; len as usize];
    file.read_exact_at(&mut buf, base + offset)?;
    Ok(buf)
}

/// The functions of the ELF object of `size` bytes at `base` in `file` (nothing if it
/// is not a 64-bit little-endian relocatable object).
fn object_functions(
    file: &File,
    base: u64,
    size: u64,
    f: &mut impl FnMut(&str, u64),
) -> io::Result<()> {
    if size < ELF_HEADER as u64 {
        return Ok(());
    }
    let eh = read(file, base, size, 0, ELF_HEADER as u64)?;
    // ELFCLASS64, ELFDATA2LSB, relocatable.
    if &eh[..4] != b"\x7fELF" || eh[4] != 2 || eh[5] != 1 || u16_at(&eh, 16) != ET_REL {
        return Ok(());
    }
    let shoff = u64_at(&eh, 0x28);
    if usize::from(u16_at(&eh, 0x3a)) != SECTION_HEADER {
        return Err(invalid("unexpected ELF section header size".into()));
    }
    let mut shnum = u64::from(u16_at(&eh, 0x3c));
    if shnum == 0 && shoff != 0 {
        // More than 0xff00 sections (one per function): the count is in section 0.
        let first = read(file, base, size, shoff, SECTION_HEADER as u64)?;
        shnum = u64_at(&first, 32);
    }
    let sections = read(file, base, size, shoff, shnum * SECTION_HEADER as u64)?;
    for sh in sections.chunks_exact(SECTION_HEADER) {
        if u32_at(sh, 4) != SHT_SYMTAB {
            continue;
        }
        let symbols = read(file, base, size, u64_at(sh, 24), u64_at(sh, 32))?;
        let link = u64::from(u32_at(sh, 40));
        if link >= shnum {
            return Err(invalid("symbol table without a string table".into()));
        }
        let strtab = &sections[link as usize * SECTION_HEADER..][..SECTION_HEADER];
        let strings = read(file, base, size, u64_at(strtab, 24), u64_at(strtab, 32))?;
        for sym in symbols.chunks_exact(SYMBOL) {
            if sym[4] & 0xf != STT_FUNC || u16_at(sym, 6) == SHN_UNDEF {
                continue;
            }
            let name = strings
                .get(u32_at(sym, 0) as usize..)
                .and_then(|s| std::ffi::CStr::from_bytes_until_nul(s).ok())
                .and_then(|s| s.to_str().ok());
            if let Some(name) = name.filter(|n| !n.is_empty()) {
                f(name, u64_at(sym, 16));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// The target's standard library archive (an rlib of ELF objects).
    fn libstd() -> std::path::PathBuf {
        let out = Command::new("rustc")
            .args(["--print", "target-libdir"])
            .output()
            .expect("rustc --print target-libdir");
        let dir = String::from_utf8(out.stdout).expect("utf-8");
        std::fs::read_dir(dir.trim())
            .expect("target libdir")
            .map(|e| e.expect("entry").path())
            .find(|p| {
                let name = p.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                name.starts_with("libstd-") && name.ends_with(".rlib")
            })
            .expect("libstd-*.rlib")
    }

    #[test]
    fn reads_the_functions_of_an_archive() {
        let mut names = Vec::new();
        functions(&libstd(), &mut |n, _| names.push(n.to_string())).expect("read libstd");
        assert!(names.len() > 1000, "only {} functions", names.len());
        // std::env::args_os, whatever its crate disambiguator.
        assert!(names
            .iter()
            .any(|n| crate::key::key(n) == "_RNvNtC3std3env7args_os"));
    }

    #[test]
    fn other_files_define_nothing() {
        let dir = std::env::temp_dir().join(format!("run-order-objects-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let text = dir.join("script");
        std::fs::write(&text, "INPUT(foo.o)\n").expect("write");
        let mut n = 0;
        functions(&text, &mut |_, _| n += 1).expect("read");
        // This test's own executable: an ELF, but not a relocatable object.
        functions(&std::env::current_exe().expect("exe"), &mut |_, _| n += 1).expect("read");
        assert_eq!(n, 0);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }

    #[test]
    fn a_truncated_archive_is_an_error() {
        let dir = std::env::temp_dir().join(format!("run-order-trunc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let lib = dir.join("lib.a");
        let mut data = AR_MAGIC.to_vec();
        // A member that says it has 64 bytes but has 8: an ELF header cut short.
        data.extend_from_slice(
            format!(
                "{:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                "a.o/", 0, 0, 0, 644, 64
            )
            .as_bytes(),
        );
        data.extend_from_slice(b"\x7fELF\x02\x01\x01\x00");
        std::fs::write(&lib, &data).expect("write");
        assert!(functions(&lib, &mut |_, _| {}).is_err());
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
