//! Where a stopped process's resident pages are: every present page of its address
//! space (`/proc/PID/pagemap`) attributed to the ELF section it holds (the program's
//! and each shared library's `.text`, `.rodata`, `.data.rel.ro`, `.bss`, …, found by
//! address through the file's program and section headers) or to its mapping
//! (`[heap]`, thread stacks, guest memory), and counted as file-backed or anonymous
//! (a private page the process wrote: relocated data, heap, stacks).
//!
//! The boot benchmark prints it for `monovirt run` at its exit stop, where VmHWM is
//! read, so the rows add up to what the peak is made of (RSS at exit is the peak to
//! within a few pages). File pages come in 64 KiB fault-around windows: one touch
//! maps up to 16 pages of a section that are in the page cache.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{ensure, Context, Result};

const PAGE: u64 = 4096;
/// pagemap: the page is present in RAM.
const PM_PRESENT: u64 = 1 << 63;
/// pagemap: the page is a file page or shared anonymous (not a private copy).
const PM_FILE: u64 = 1 << 61;

/// Resident pages per place, file-backed and anonymous.
#[derive(Debug, Default)]
pub struct Residency {
    /// (place, file pages, anonymous pages).
    rows: Vec<(String, u64, u64)>,
}

struct Section {
    name: String,
    start: u64,
    end: u64,
}

/// An ELF file's allocated sections at their addresses in this process.
struct Loaded {
    label: String,
    sections: Vec<Section>,
    start: u64,
    end: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes(b[at..at + 2].try_into().expect("2 bytes"))
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn read_at(file: &File, offset: u64, len: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// The allocated sections of the ELF64 file `path` whose first loadable segment is
/// mapped at `first_map` (the start of its mapping at file offset 0).
fn sections(path: &Path, first_map: u64) -> Result<Loaded> {
    let file = File::open(path)?;
    let header = read_at(&file, 0, 64)?;
    ensure!(&header[..4] == b"\x7fELF" && header[4] == 2, "not ELF64");
    let (phoff, phentsize, phnum) = (
        u64_at(&header, 0x20),
        u16_at(&header, 0x36) as usize,
        u16_at(&header, 0x38) as usize,
    );
    let (shoff, shentsize, shnum, shstrndx) = (
        u64_at(&header, 0x28),
        u16_at(&header, 0x3a) as usize,
        u16_at(&header, 0x3c) as usize,
        u16_at(&header, 0x3e) as usize,
    );
    ensure!(
        phentsize >= 56 && shentsize >= 64 && shstrndx < shnum,
        "unexpected ELF header sizes"
    );
    let phdrs = read_at(&file, phoff, phentsize * phnum)?;
    // The load bias: where the segment at file offset 0 sits, minus its link address.
    let first_vaddr = (0..phnum)
        .map(|i| &phdrs[i * phentsize..])
        .find(|p| u32_at(p, 0) == 1 && u64_at(p, 8) == 0)
        .map(|p| u64_at(p, 16) & !(PAGE - 1))
        .context("no PT_LOAD at file offset 0")?;
    let bias = first_map.wrapping_sub(first_vaddr);
    let shdrs = read_at(&file, shoff, shentsize * shnum)?;
    let shdr = |i: usize| &shdrs[i * shentsize..(i + 1) * shentsize];
    let names = shdr(shstrndx);
    let names = read_at(&file, u64_at(names, 24), u64_at(names, 32) as usize)?;
    let mut out = Vec::new();
    for i in 0..shnum {
        let s = shdr(i);
        const SHF_ALLOC: u64 = 2;
        const SHF_TLS: u64 = 0x400;
        const SHT_NOBITS: u32 = 8;
        let flags = u64_at(s, 8);
        // .tbss takes no address space of its own (it overlaps what follows it).
        let tbss = flags & SHF_TLS != 0 && u32_at(s, 4) == SHT_NOBITS;
        if flags & SHF_ALLOC == 0 || u64_at(s, 32) == 0 || tbss {
            continue;
        }
        let name = names.get(u32_at(s, 0) as usize..).unwrap_or_default();
        let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
        let start = bias.wrapping_add(u64_at(s, 16));
        out.push(Section {
            name: String::from_utf8_lossy(name).into_owned(),
            start,
            end: start + u64_at(s, 32),
        });
    }
    out.sort_by_key(|s| s.start);
    let label = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Loaded {
        label,
        start: out.first().map_or(0, |s| s.start),
        end: out.iter().map(|s| s.end).max().unwrap_or(0),
        sections: out,
    })
}

impl Loaded {
    /// The section a page belongs to: the one holding most of its bytes.
    fn section_of(&self, page: u64) -> &str {
        self.sections
            .iter()
            .map(|s| (s, s.end.min(page + PAGE).saturating_sub(s.start.max(page))))
            .filter(|(_, overlap)| *overlap > 0)
            .max_by_key(|(_, overlap)| *overlap)
            .map_or("(between sections)", |(s, _)| s.name.as_str())
    }
}

struct Vma {
    start: u64,
    end: u64,
    perms: String,
    offset: u64,
    path: String,
}

fn vmas(pid: libc::pid_t) -> Result<Vec<Vma>> {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps"))?;
    let mut out = Vec::new();
    for line in maps.lines() {
        let mut f = line.splitn(6, ' ');
        let range = f.next().context("range")?;
        let perms = f.next().context("perms")?.to_string();
        let offset = u64::from_str_radix(f.next().context("offset")?, 16)?;
        let (_dev, _inode) = (f.next(), f.next());
        let path = f.next().unwrap_or("").trim().to_string();
        let (start, end) = range.split_once('-').context("range")?;
        out.push(Vma {
            start: u64::from_str_radix(start, 16)?,
            end: u64::from_str_radix(end, 16)?,
            perms,
            offset,
            path,
        });
    }
    Ok(out)
}

/// A mapping that is no ELF section, by what it is for. glibc gives each thread stack
/// a guard page below it (an inaccessible mapping right under the stack's), and keeps
/// the stacks of ended threads mapped for reuse.
fn mapping_label(vmas: &[Vma], i: usize) -> String {
    let vma = &vmas[i];
    if vma.path.starts_with("/memfd:") {
        return "guest memory (memfd)".into();
    }
    if !vma.path.is_empty() {
        return vma.path.clone();
    }
    let guarded = i > 0 && vmas[i - 1].end == vma.start && vmas[i - 1].perms == "---p";
    if guarded && vma.perms == "rw-p" {
        return "[thread stacks]".into();
    }
    "[anonymous: malloc, mmap]".into()
}

/// The residency of stopped process `pid`, whose program is `program`.
pub fn read(pid: libc::pid_t, program: &Path) -> Result<Residency> {
    let vmas = vmas(pid)?;
    let pagemap = File::open(format!("/proc/{pid}/pagemap"))?;
    // Every ELF file mapped, with its sections at their run-time addresses.
    let mut loaded: Vec<Loaded> = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    for v in &vmas {
        let path = PathBuf::from(&v.path);
        if v.offset != 0 || !path.is_absolute() || seen.contains(&path) {
            continue;
        }
        seen.push(path.clone());
        if let Ok(mut l) = sections(&path, v.start) {
            if path == program {
                l.label = "monovirt".into();
            }
            loaded.push(l);
        }
    }
    let mut counts: HashMap<String, (u64, u64)> = HashMap::new();
    for (n, v) in vmas.iter().enumerate() {
        let pages = ((v.end - v.start) / PAGE) as usize;
        if v.path == "[vsyscall]" {
            continue;
        }
        let entries = read_at(&pagemap, v.start / PAGE * 8, pages * 8)
            .with_context(|| format!("pagemap of {:x}-{:x}", v.start, v.end))?;
        let owner = loaded.iter().find(|l| l.start < v.end && v.start < l.end);
        for i in 0..pages {
            let e = u64_at(&entries, i * 8);
            if e & PM_PRESENT == 0 {
                continue;
            }
            let page = v.start + i as u64 * PAGE;
            let place = match owner {
                Some(l) => format!("{} {}", l.label, l.section_of(page)),
                None => mapping_label(&vmas, n),
            };
            let c = counts.entry(place).or_default();
            if e & PM_FILE != 0 {
                c.0 += 1;
            } else {
                c.1 += 1;
            }
        }
    }
    let mut rows: Vec<(String, u64, u64)> = counts
        .into_iter()
        .map(|(place, (file, anon))| (place, file * 4, anon * 4))
        .collect();
    rows.sort_by(|a, b| (b.1 + b.2).cmp(&(a.1 + a.2)).then(a.0.cmp(&b.0)));
    Ok(Residency { rows })
}

impl Residency {
    /// Prints the places holding the most pages, the rest summed, and the total.
    pub fn print(&self, title: &str, top: usize) {
        println!("{title}");
        println!("| where | file (KiB) | anon (KiB) |");
        println!("| --- | --- | --- |");
        for (place, file, anon) in self.rows.iter().take(top) {
            println!("| {place} | {file} | {anon} |");
        }
        let rest = self.rows.iter().skip(top);
        let (n, file, anon) = rest.fold((0, 0, 0), |(n, f, a), r| (n + 1, f + r.1, a + r.2));
        if n > 0 {
            println!("| {n} more places | {file} | {anon} |");
        }
        let (file, anon) = self
            .rows
            .iter()
            .fold((0, 0), |(f, a), r| (f + r.1, a + r.2));
        println!("| total | {file} | {anon} |");
        println!();
    }
}
