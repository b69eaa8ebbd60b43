//! Turning a descriptor chain into a validated block request.
//!
//! A request is `struct virtio_blk_req`: a 16-byte device-readable header (type, reserved,
//! sector), data, and a final device-writable status byte; how the driver splits that into
//! descriptors is its business. Parsing checks everything the guest controls before any I/O
//! is issued: every descriptor lies in guest memory, device-readable descriptors come
//! before device-writable ones, the chain terminates (no loop, no index out of the table),
//! the status byte is writable, the data direction matches the type, data is whole sectors,
//! and every sector range fits the disk.

use thiserror::Error;
use virtio_bindings::virtio_blk;
use virtio_queue::desc::split::Descriptor;
use virtio_queue::DescriptorChain;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory, Permissions};

/// Bytes per sector.
pub const SECTOR_SIZE: u64 = 512;
/// log2 of [`SECTOR_SIZE`].
pub const SECTOR_SHIFT: u32 = 9;
/// Length of the request header.
const HEADER_LEN: u64 = 16;
/// Length of one discard / write-zeroes segment.
const RANGE_LEN: u64 = 16;
/// Bytes of the device ID (GET_ID).
pub const ID_BYTES: usize = virtio_blk::VIRTIO_BLK_ID_BYTES as usize;
/// Write-zeroes flag: the device may deallocate the range.
pub const WRITE_ZEROES_FLAG_UNMAP: u32 = 1;

/// Request status: success.
pub const STATUS_OK: u8 = virtio_blk::VIRTIO_BLK_S_OK as u8;
/// Request status: I/O error (also: a request the device refuses, like a write to a
/// read-only disk or an out-of-range sector).
pub const STATUS_IOERR: u8 = virtio_blk::VIRTIO_BLK_S_IOERR as u8;
/// Request status: unsupported request type.
pub const STATUS_UNSUPP: u8 = virtio_blk::VIRTIO_BLK_S_UNSUPP as u8;

/// A contiguous buffer in guest memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Guest physical address.
    pub addr: GuestAddress,
    /// Length in bytes.
    pub len: u32,
}

/// One range of a discard or write-zeroes request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SectorRange {
    /// First sector.
    pub sector: u64,
    /// Number of sectors.
    pub sectors: u32,
    /// Whether the device may deallocate (write-zeroes with UNMAP).
    pub unmap: bool,
}

/// What a request asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RequestKind {
    /// Read `len` bytes at `sector` into the data segments.
    In {
        /// First sector.
        sector: u64,
    },
    /// Write the data segments at `sector`.
    Out {
        /// First sector.
        sector: u64,
    },
    /// Make completed writes durable.
    Flush,
    /// Return the device ID (the disk serial).
    GetId,
    /// Deallocate ranges.
    Discard(Vec<SectorRange>),
    /// Zero ranges.
    WriteZeroes(Vec<SectorRange>),
}

/// A validated request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Descriptor chain head, for the used ring.
    pub head: u16,
    /// The operation.
    pub kind: RequestKind,
    /// Data segments: device-writable for `In`/`GetId`, device-readable for `Out`.
    pub data: Vec<Segment>,
    /// Total length of `data`.
    pub data_len: u64,
    /// Where the status byte goes.
    pub status: GuestAddress,
}

/// Why a chain is not a valid request.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum RequestError {
    /// The chain is empty, loops, or points outside the descriptor table.
    #[error("Descriptor chain does not terminate")]
    UnterminatedChain,
    /// A descriptor's buffer is not in guest memory.
    #[error("Descriptor buffer {addr:#x}+{len:#x} is outside guest memory")]
    OutsideGuestMemory {
        /// Buffer address.
        addr: u64,
        /// Buffer length.
        len: u32,
    },
    /// A device-readable descriptor follows a device-writable one.
    #[error("Device-readable descriptor after a device-writable one")]
    DescriptorOrder,
    /// The last descriptor is not device-writable, so there is no status byte.
    #[error("Status descriptor is not device-writable")]
    StatusNotWritable,
    /// Fewer than 16 device-readable bytes.
    #[error("Request header too short")]
    HeaderTooShort,
    /// The data is in the wrong direction for the request type.
    #[error("Data buffers in the wrong direction for request type {0}")]
    WrongDirection(u32),
    /// Data is not a whole number of sectors (or of 16-byte ranges).
    #[error("Data length {0} is not a whole number of units")]
    PartialUnit(u64),
    /// The sector range does not fit the disk.
    #[error("Sectors {sector}+{sectors} beyond capacity {capacity}")]
    OutOfRange {
        /// First sector.
        sector: u64,
        /// Number of sectors.
        sectors: u64,
        /// Disk capacity in sectors.
        capacity: u64,
    },
    /// Too many ranges, too many sectors in one range, or reserved flags set.
    #[error("Discard/write-zeroes request exceeds the advertised limits")]
    LimitExceeded,
    /// The request type is not implemented.
    #[error("Unsupported request type {0}")]
    Unsupported(u32),
    /// Reading the header or a range from guest memory failed.
    #[error("Failed to read the request from guest memory")]
    GuestMemory,
}

impl RequestError {
    /// The status the driver gets for this error.
    pub fn status(&self) -> u8 {
        match self {
            RequestError::Unsupported(_) => STATUS_UNSUPP,
            _ => STATUS_IOERR,
        }
    }
}

/// A failed parse, with where the status byte is if the chain got that far.
#[derive(Debug, PartialEq, Eq)]
pub struct ParseFailure {
    /// Descriptor chain head.
    pub head: u16,
    /// Why.
    pub error: RequestError,
    /// The status byte, if the chain has a writable last descriptor.
    pub status: Option<GuestAddress>,
}

/// Limits the device advertises in its configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestLimits {
    /// Disk size in sectors.
    pub capacity: u64,
    /// Maximum ranges in one discard request.
    pub max_discard_seg: u32,
    /// Maximum sectors in one discard range.
    pub max_discard_sectors: u32,
    /// Maximum ranges in one write-zeroes request.
    pub max_write_zeroes_seg: u32,
    /// Maximum sectors in one write-zeroes range.
    pub max_write_zeroes_sectors: u32,
}

/// Device-readable and device-writable parts of a chain.
#[derive(Default)]
struct Buffers {
    readable: Vec<Segment>,
    writable: Vec<Segment>,
}

/// Removes the first `n` bytes of `segments` (n <= their total length).
fn skip_front(segments: &mut Vec<Segment>, mut n: u64) {
    let mut drop = 0;
    for seg in segments.iter_mut() {
        if n == 0 {
            break;
        }
        let take = n.min(u64::from(seg.len));
        // `take` <= seg.len, so it fits in u32 and the address stays inside the segment.
        seg.addr = seg.addr.unchecked_add(take);
        seg.len -= take as u32;
        n -= take;
        if seg.len == 0 {
            drop += 1;
        }
    }
    segments.drain(..drop);
}

/// Removes the last byte of `segments` (which must not be empty).
fn drop_last_byte(segments: &mut Vec<Segment>) {
    if let Some(last) = segments.last_mut() {
        last.len -= 1;
        if last.len == 0 {
            segments.pop();
        }
    }
}

fn total(segments: &[Segment]) -> u64 {
    segments.iter().map(|s| u64::from(s.len)).sum()
}

/// Copies the first `buf.len()` bytes of `segments` out of guest memory.
fn read_bytes<M: GuestMemory + ?Sized>(mem: &M, segments: &[Segment], buf: &mut [u8]) -> bool {
    let mut done = 0;
    for seg in segments {
        if done == buf.len() {
            break;
        }
        let n = (buf.len() - done).min(seg.len as usize);
        if mem.read_slice(&mut buf[done..done + n], seg.addr).is_err() {
            return false;
        }
        done += n;
    }
    done == buf.len()
}

fn check_range(sector: u64, sectors: u64, capacity: u64) -> Result<(), RequestError> {
    match sector.checked_add(sectors) {
        Some(end) if end <= capacity => Ok(()),
        _ => Err(RequestError::OutOfRange {
            sector,
            sectors,
            capacity,
        }),
    }
}

impl Request {
    /// Validates `chain` against guest memory and the disk's limits.
    pub fn parse<M, D>(
        chain: DescriptorChain<D>,
        limits: &RequestLimits,
    ) -> Result<Request, ParseFailure>
    where
        M: GuestMemory + ?Sized,
        D: std::ops::Deref<Target = M> + Clone,
    {
        let head = chain.head_index();
        let mem: &M = chain.memory();
        let descriptors: Vec<Descriptor> = chain.clone().collect();
        let fail = |error, status| ParseFailure {
            head,
            error,
            status,
        };

        // The chain iterator stops silently on loops (after queue-size descriptors), on a
        // `next` outside the table, on an unreadable descriptor or on a 4 GiB overflow: in
        // each case the last descriptor it yielded still says "next".
        let Some(last) = descriptors.last() else {
            return Err(fail(RequestError::UnterminatedChain, None));
        };
        if last.has_next() {
            return Err(fail(RequestError::UnterminatedChain, None));
        }
        let status = (last.is_write_only() && last.len() > 0)
            .then(|| last.addr().unchecked_add(u64::from(last.len()) - 1));
        let mut buffers = Buffers::default();
        for desc in &descriptors {
            let access = if desc.is_write_only() {
                Permissions::Write
            } else {
                Permissions::Read
            };
            if !mem.check_range(desc.addr(), desc.len() as usize, access) {
                // Without a trustworthy status byte the request just fails.
                return Err(fail(
                    RequestError::OutsideGuestMemory {
                        addr: desc.addr().raw_value(),
                        len: desc.len(),
                    },
                    None,
                ));
            }
            if desc.len() == 0 {
                continue;
            }
            let seg = Segment {
                addr: desc.addr(),
                len: desc.len(),
            };
            if desc.is_write_only() {
                buffers.writable.push(seg);
            } else if buffers.writable.is_empty() {
                buffers.readable.push(seg);
            } else {
                return Err(fail(RequestError::DescriptorOrder, status));
            }
        }
        let Some(status) = status else {
            return Err(fail(RequestError::StatusNotWritable, None));
        };
        let fail = |error| ParseFailure {
            head,
            error,
            status: Some(status),
        };

        let mut header = [0u8; HEADER_LEN as usize];
        if total(&buffers.readable) < HEADER_LEN {
            return Err(fail(RequestError::HeaderTooShort));
        }
        if !read_bytes(mem, &buffers.readable, &mut header) {
            return Err(fail(RequestError::GuestMemory));
        }
        let request_type = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let mut sector_bytes = [0u8; 8];
        sector_bytes.copy_from_slice(&header[8..16]);
        let sector = u64::from_le_bytes(sector_bytes);

        let mut readable = buffers.readable;
        skip_front(&mut readable, HEADER_LEN);
        let mut writable = buffers.writable;
        drop_last_byte(&mut writable);

        let (kind, data) = match request_type {
            virtio_blk::VIRTIO_BLK_T_IN | virtio_blk::VIRTIO_BLK_T_OUT => {
                let is_read = request_type == virtio_blk::VIRTIO_BLK_T_IN;
                let (data, other) = if is_read {
                    (writable, &readable)
                } else {
                    (readable, &writable)
                };
                if !other.is_empty() {
                    return Err(fail(RequestError::WrongDirection(request_type)));
                }
                let len = total(&data);
                if !len.is_multiple_of(SECTOR_SIZE) {
                    return Err(fail(RequestError::PartialUnit(len)));
                }
                check_range(sector, len >> SECTOR_SHIFT, limits.capacity).map_err(fail)?;
                let kind = if is_read {
                    RequestKind::In { sector }
                } else {
                    RequestKind::Out { sector }
                };
                (kind, data)
            }
            virtio_blk::VIRTIO_BLK_T_FLUSH => (RequestKind::Flush, Vec::new()),
            virtio_blk::VIRTIO_BLK_T_GET_ID => {
                if !readable.is_empty() {
                    return Err(fail(RequestError::WrongDirection(request_type)));
                }
                (RequestKind::GetId, writable)
            }
            virtio_blk::VIRTIO_BLK_T_DISCARD | virtio_blk::VIRTIO_BLK_T_WRITE_ZEROES => {
                let discard = request_type == virtio_blk::VIRTIO_BLK_T_DISCARD;
                if !writable.is_empty() {
                    return Err(fail(RequestError::WrongDirection(request_type)));
                }
                let ranges = Self::parse_ranges(mem, &readable, discard, limits).map_err(fail)?;
                let kind = if discard {
                    RequestKind::Discard(ranges)
                } else {
                    RequestKind::WriteZeroes(ranges)
                };
                (kind, Vec::new())
            }
            other => return Err(fail(RequestError::Unsupported(other))),
        };
        let data_len = total(&data);
        Ok(Request {
            head,
            kind,
            data,
            data_len,
            status,
        })
    }

    fn parse_ranges<M: GuestMemory + ?Sized>(
        mem: &M,
        segments: &[Segment],
        discard: bool,
        limits: &RequestLimits,
    ) -> Result<Vec<SectorRange>, RequestError> {
        let len = total(segments);
        if len == 0 || !len.is_multiple_of(RANGE_LEN) {
            return Err(RequestError::PartialUnit(len));
        }
        let (max_seg, max_sectors) = if discard {
            (limits.max_discard_seg, limits.max_discard_sectors)
        } else {
            (limits.max_write_zeroes_seg, limits.max_write_zeroes_sectors)
        };
        let count = len / RANGE_LEN;
        if count > u64::from(max_seg) {
            return Err(RequestError::LimitExceeded);
        }
        let mut raw = vec![0u8; len as usize];
        if !read_bytes(mem, segments, &mut raw) {
            return Err(RequestError::GuestMemory);
        }
        let mut ranges = Vec::with_capacity(count as usize);
        for chunk in raw.chunks_exact(RANGE_LEN as usize) {
            let mut sector = [0u8; 8];
            sector.copy_from_slice(&chunk[0..8]);
            let sector = u64::from_le_bytes(sector);
            let sectors = u32::from_le_bytes([chunk[8], chunk[9], chunk[10], chunk[11]]);
            let flags = u32::from_le_bytes([chunk[12], chunk[13], chunk[14], chunk[15]]);
            // Discard has no flags; write-zeroes only UNMAP.
            let allowed = if discard { 0 } else { WRITE_ZEROES_FLAG_UNMAP };
            if flags & !allowed != 0 || sectors > max_sectors {
                return Err(RequestError::LimitExceeded);
            }
            check_range(sector, u64::from(sectors), limits.capacity)?;
            ranges.push(SectorRange {
                sector,
                sectors,
                unmap: flags & WRITE_ZEROES_FLAG_UNMAP != 0,
            });
        }
        Ok(ranges)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_bindings::virtio_ring::{
        VRING_DESC_F_INDIRECT, VRING_DESC_F_NEXT, VRING_DESC_F_WRITE,
    };
    use virtio_queue::desc::RawDescriptor;
    use virtio_queue::mock::MockSplitQueue;
    use vm_memory::GuestMemoryMmap;

    const LIMITS: RequestLimits = RequestLimits {
        capacity: 16,
        max_discard_seg: 2,
        max_discard_sectors: 8,
        max_write_zeroes_seg: 2,
        max_write_zeroes_sectors: 8,
    };
    const W: u16 = VRING_DESC_F_WRITE as u16;

    fn memory() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    fn header(mem: &GuestMemoryMmap, at: u64, kind: u32, sector: u64) {
        mem.write_obj(kind.to_le(), GuestAddress(at)).unwrap();
        mem.write_obj(0u32, GuestAddress(at + 4)).unwrap();
        mem.write_obj(sector.to_le(), GuestAddress(at + 8)).unwrap();
    }

    fn d(addr: u64, len: u32, flags: u16) -> RawDescriptor {
        RawDescriptor::from(Descriptor::new(addr, len, flags, 0))
    }

    fn parse(mem: &GuestMemoryMmap, descs: &[RawDescriptor]) -> Result<Request, ParseFailure> {
        let q = MockSplitQueue::new(mem, 16);
        let chain = q.build_desc_chain(descs).unwrap();
        Request::parse(chain, &LIMITS)
    }

    #[test]
    fn read_request() {
        let mem = memory();
        header(&mem, 0x1000, virtio_blk::VIRTIO_BLK_T_IN, 3);
        let r = parse(
            &mem,
            &[
                d(0x1000, 16, 0),
                d(0x2000, 512, W),
                d(0x3000, 512, W),
                d(0x4000, 1, W),
            ],
        )
        .unwrap();
        assert_eq!(r.kind, RequestKind::In { sector: 3 });
        assert_eq!(r.data_len, 1024);
        assert_eq!(r.data.len(), 2);
        assert_eq!(r.status, GuestAddress(0x4000));
    }

    #[test]
    fn header_and_status_may_share_descriptors() {
        let mem = memory();
        // Header and data in one readable buffer; data and status in one writable buffer.
        header(&mem, 0x1000, virtio_blk::VIRTIO_BLK_T_OUT, 0);
        let r = parse(&mem, &[d(0x1000, 16 + 512, 0), d(0x4000, 1, W)]).unwrap();
        assert_eq!(r.kind, RequestKind::Out { sector: 0 });
        assert_eq!(
            r.data,
            vec![Segment {
                addr: GuestAddress(0x1010),
                len: 512
            }]
        );
        header(&mem, 0x1000, virtio_blk::VIRTIO_BLK_T_IN, 0);
        let r = parse(&mem, &[d(0x1000, 16, 0), d(0x2000, 513, W)]).unwrap();
        assert_eq!(r.data_len, 512);
        assert_eq!(r.status, GuestAddress(0x2200));
    }

    #[test]
    fn malformed_chains() {
        let mem = memory();
        header(&mem, 0x1000, virtio_blk::VIRTIO_BLK_T_IN, 0);
        let err = |descs: &[RawDescriptor]| parse(&mem, descs).unwrap_err();
        // Too short: header only, no status.
        assert_eq!(
            err(&[d(0x1000, 16, 0)]).error,
            RequestError::StatusNotWritable
        );
        // Header shorter than 16 bytes.
        let e = err(&[d(0x1000, 8, 0), d(0x4000, 1, W)]);
        assert_eq!(e.error, RequestError::HeaderTooShort);
        assert_eq!(e.status, Some(GuestAddress(0x4000)));
        // Read request whose data buffer is device-readable.
        let e = err(&[d(0x1000, 16, 0), d(0x2000, 512, 0), d(0x4000, 1, W)]);
        assert_eq!(e.error, RequestError::WrongDirection(0));
        // Readable after writable.
        let e = err(&[
            d(0x1000, 16, 0),
            d(0x2000, 512, W),
            d(0x3000, 1, 0),
            d(0x4000, 1, W),
        ]);
        assert_eq!(e.error, RequestError::DescriptorOrder);
        // Status descriptor not writable.
        let e = err(&[d(0x1000, 16, 0), d(0x2000, 512, W), d(0x4000, 1, 0)]);
        assert_eq!(e.error, RequestError::DescriptorOrder);
        let e = err(&[d(0x1000, 16, 0), d(0x4000, 0, W)]);
        assert_eq!(e.error, RequestError::StatusNotWritable);
        // Partial sector.
        let e = err(&[d(0x1000, 16, 0), d(0x2000, 100, W), d(0x4000, 1, W)]);
        assert_eq!(e.error, RequestError::PartialUnit(100));
        // Outside guest memory.
        let e = err(&[d(0x1000, 16, 0), d(0xff_fe00, 512, W), d(0x4000, 1, W)]);
        assert!(matches!(e.error, RequestError::OutsideGuestMemory { .. }));
        assert_eq!(e.status, None);
        // Address + length wrapping around.
        let e = err(&[
            d(0x1000, 16, 0),
            d(u64::MAX - 0xff, 512, W),
            d(0x4000, 1, W),
        ]);
        assert!(matches!(e.error, RequestError::OutsideGuestMemory { .. }));
        // Out of range: 16 sectors, last one is 15.
        header(&mem, 0x1000, virtio_blk::VIRTIO_BLK_T_IN, 15);
        let e = err(&[d(0x1000, 16, 0), d(0x2000, 1024, W), d(0x4000, 1, W)]);
        assert_eq!(
            e.error,
            RequestError::OutOfRange {
                sector: 15,
                sectors: 2,
                capacity: 16
            }
        );
        header(&mem, 0x1000, virtio_blk::VIRTIO_BLK_T_IN, u64::MAX);
        let e = err(&[d(0x1000, 16, 0), d(0x2000, 512, W), d(0x4000, 1, W)]);
        assert!(matches!(e.error, RequestError::OutOfRange { .. }));
        // Unknown type: UNSUPP with a status.
        header(&mem, 0x1000, 0x77, 0);
        let e = err(&[d(0x1000, 16, 0), d(0x4000, 1, W)]);
        assert_eq!(e.error.status(), STATUS_UNSUPP);
    }

    #[test]
    fn descriptor_loop_is_caught() {
        let mem = memory();
        header(&mem, 0x1000, virtio_blk::VIRTIO_BLK_T_IN, 0);
        let q = MockSplitQueue::new(&mem, 16);
        // 0 -> 1 -> 0 -> ...
        let descs = [
            RawDescriptor::from(Descriptor::new(0x1000, 16, VRING_DESC_F_NEXT as u16, 1)),
            RawDescriptor::from(Descriptor::new(
                0x4000,
                1,
                (VRING_DESC_F_NEXT as u16) | W,
                0,
            )),
        ];
        let chain = q.build_multiple_desc_chains(&descs).unwrap();
        let e = Request::parse(chain, &LIMITS).unwrap_err();
        assert_eq!(e.error, RequestError::UnterminatedChain);
        // `next` past the end of the table.
        let q = MockSplitQueue::new(&mem, 16);
        let descs = [RawDescriptor::from(Descriptor::new(
            0x1000,
            16,
            VRING_DESC_F_NEXT as u16,
            100,
        ))];
        let chain = q.build_multiple_desc_chains(&descs).unwrap();
        let e = Request::parse(chain, &LIMITS).unwrap_err();
        assert_eq!(e.error, RequestError::UnterminatedChain);
    }

    #[test]
    fn nested_indirect_table_is_caught() {
        let mem = memory();
        let q = MockSplitQueue::new(&mem, 16);
        // An indirect table whose entry is itself indirect.
        mem.write_obj(
            RawDescriptor::from(Descriptor::new(0x6000, 16, VRING_DESC_F_INDIRECT as u16, 0)),
            GuestAddress(0x5000),
        )
        .unwrap();
        let descs = [RawDescriptor::from(Descriptor::new(
            0x5000,
            16,
            VRING_DESC_F_INDIRECT as u16,
            0,
        ))];
        let chain = q.build_multiple_desc_chains(&descs).unwrap();
        let e = Request::parse(chain, &LIMITS).unwrap_err();
        assert_eq!(e.error, RequestError::UnterminatedChain);
    }

    fn range(mem: &GuestMemoryMmap, at: u64, sector: u64, sectors: u32, flags: u32) {
        mem.write_obj(sector.to_le(), GuestAddress(at)).unwrap();
        mem.write_obj(sectors.to_le(), GuestAddress(at + 8))
            .unwrap();
        mem.write_obj(flags.to_le(), GuestAddress(at + 12)).unwrap();
    }

    #[test]
    fn discard_and_write_zeroes_limits() {
        let mem = memory();
        header(&mem, 0x1000, virtio_blk::VIRTIO_BLK_T_DISCARD, 0);
        range(&mem, 0x2000, 0, 8, 0);
        range(&mem, 0x2010, 8, 8, 0);
        let r = parse(&mem, &[d(0x1000, 16, 0), d(0x2000, 32, 0), d(0x4000, 1, W)]).unwrap();
        assert!(matches!(r.kind, RequestKind::Discard(ref v) if v.len() == 2));
        // Too many sectors in one range.
        range(&mem, 0x2000, 0, 9, 0);
        let e = parse(&mem, &[d(0x1000, 16, 0), d(0x2000, 16, 0), d(0x4000, 1, W)]).unwrap_err();
        assert_eq!(e.error, RequestError::LimitExceeded);
        // UNMAP is not a discard flag.
        range(&mem, 0x2000, 0, 1, 1);
        let e = parse(&mem, &[d(0x1000, 16, 0), d(0x2000, 16, 0), d(0x4000, 1, W)]).unwrap_err();
        assert_eq!(e.error, RequestError::LimitExceeded);
        // Too many ranges.
        let e = parse(&mem, &[d(0x1000, 16, 0), d(0x2000, 48, 0), d(0x4000, 1, W)]).unwrap_err();
        assert_eq!(e.error, RequestError::LimitExceeded);
        // Write zeroes with UNMAP, past the end.
        header(&mem, 0x1000, virtio_blk::VIRTIO_BLK_T_WRITE_ZEROES, 0);
        range(&mem, 0x2000, 12, 8, 1);
        let e = parse(&mem, &[d(0x1000, 16, 0), d(0x2000, 16, 0), d(0x4000, 1, W)]).unwrap_err();
        assert!(matches!(e.error, RequestError::OutOfRange { .. }));
        range(&mem, 0x2000, 8, 8, 1);
        let r = parse(&mem, &[d(0x1000, 16, 0), d(0x2000, 16, 0), d(0x4000, 1, W)]).unwrap();
        assert_eq!(
            r.kind,
            RequestKind::WriteZeroes(vec![SectorRange {
                sector: 8,
                sectors: 8,
                unmap: true
            }])
        );
        // A partial range.
        let e = parse(&mem, &[d(0x1000, 16, 0), d(0x2000, 12, 0), d(0x4000, 1, W)]).unwrap_err();
        assert_eq!(e.error, RequestError::PartialUnit(12));
    }
}
