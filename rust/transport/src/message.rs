//! A received message of a length learnt only as its frames arrive.
//!
//! Small messages live in a `Vec`. A message that outgrows [`MAP_MIN`] moves, once, into an
//! anonymous memory mapping (Linux) that grows with `mremap`: growing moves page-table
//! entries instead of copying the bytes received so far, and the kernel hands out zeroed
//! pages as the socket writes into them, so there is neither a `memset` nor a `memmove`
//! per doubling. With a `Vec` a 100 MB message is zero-filled and copied about twice over
//! on its way in, which caps a loopback transfer at roughly a third of what the socket
//! can carry.
//!
//! Growth stays bounded by what has arrived (see [`Message::room`]): a peer that announces
//! a large message but sends nothing costs at most [`GROW_MIN`] bytes of address space.

/// Messages larger than this are received into a memory mapping.
pub const MAP_MIN: usize = 1 << 20;
/// The buffer grows ahead of the received bytes by at least this much.
pub const GROW_MIN: usize = 64 * 1024;

/// One received message: dereferences to its bytes.
pub struct Message {
    repr: Repr,
    len: usize,
}

enum Repr {
    /// Zero-filled up to its `len()`, which is the capacity in use; the message is `[..len]`.
    Heap(Vec<u8>),
    #[cfg(target_os = "linux")]
    Mapped(mapping::Mapping),
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Message").field("len", &self.len).field("mapped", &self.is_mapped()).finish()
    }
}

impl Default for Message {
    fn default() -> Self {
        Self::new()
    }
}

impl Message {
    pub fn new() -> Self {
        Message { repr: Repr::Heap(Vec::new()), len: 0 }
    }

    /// Whether the bytes live in a memory mapping (the message outgrew [`MAP_MIN`]).
    pub fn is_mapped(&self) -> bool {
        !matches!(self.repr, Repr::Heap(_))
    }

    fn capacity(&self) -> usize {
        match &self.repr {
            Repr::Heap(v) => v.len(),
            #[cfg(target_os = "linux")]
            Repr::Mapped(m) => m.len(),
        }
    }

    fn storage(&mut self) -> &mut [u8] {
        match &mut self.repr {
            Repr::Heap(v) => v,
            #[cfg(target_os = "linux")]
            Repr::Mapped(m) => m.as_mut_slice(),
        }
    }

    /// Writable room after the received bytes, ending at most at `limit` (the end of the
    /// frame being read). When the buffer is full it grows by what was received so far (at
    /// least [`GROW_MIN`]), never by `limit` alone. Empty only when `limit <= len`.
    pub fn room(&mut self, limit: usize) -> std::io::Result<&mut [u8]> {
        if self.len == self.capacity() && limit > self.len {
            let want = limit.min(self.len.saturating_add(self.len.max(GROW_MIN)));
            self.grow(want)?;
        }
        let (start, end) = (self.len, limit.min(self.capacity()).max(self.len));
        Ok(&mut self.storage()[start..end])
    }

    /// Marks `n` more bytes (written into [`Message::room`]) as received.
    pub fn advance(&mut self, n: usize) {
        debug_assert!(self.len + n <= self.capacity());
        self.len += n;
    }

    fn grow(&mut self, want: usize) -> std::io::Result<()> {
        match &mut self.repr {
            #[cfg(target_os = "linux")]
            Repr::Heap(v) if want > MAP_MIN => {
                let mut m = mapping::Mapping::new(want)?;
                m.as_mut_slice()[..self.len].copy_from_slice(&v[..self.len]);
                self.repr = Repr::Mapped(m);
            }
            Repr::Heap(v) => v.resize(want, 0),
            #[cfg(target_os = "linux")]
            Repr::Mapped(m) => m.resize(want)?,
        }
        Ok(())
    }

    /// Drops the spare capacity (a mapping shrinks in place; nothing is copied).
    pub fn finish(&mut self) {
        let len = self.len;
        match &mut self.repr {
            Repr::Heap(v) => v.truncate(len),
            #[cfg(target_os = "linux")]
            Repr::Mapped(m) => m.shrink(len),
        }
    }

    /// The bytes as a `Vec` (a copy when the message is mapped).
    pub fn into_vec(self) -> Vec<u8> {
        self.try_into_vec().unwrap_or_else(|mapped| mapped.to_vec())
    }

    /// The bytes as a `Vec` when they are in one already; the message back otherwise.
    pub fn try_into_vec(self) -> Result<Vec<u8>, Self> {
        match self.repr {
            Repr::Heap(mut v) => {
                v.truncate(self.len);
                Ok(v)
            }
            #[cfg(target_os = "linux")]
            Repr::Mapped(_) => Err(self),
        }
    }
}

impl std::ops::Deref for Message {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.repr {
            Repr::Heap(v) => &v[..self.len],
            #[cfg(target_os = "linux")]
            Repr::Mapped(m) => &m.as_slice()[..self.len],
        }
    }
}

impl std::ops::DerefMut for Message {
    fn deref_mut(&mut self) -> &mut [u8] {
        let len = self.len;
        &mut self.storage()[..len]
    }
}

#[cfg(target_os = "linux")]
mod mapping {
    use std::io;
    use std::ptr::NonNull;

    const PAGE: usize = 4096;
    /// Mappings at least this large ask for transparent huge pages: 512× fewer page faults.
    const HUGE_MIN: usize = 4 << 20;

    fn pages(n: usize) -> usize {
        n.max(1).next_multiple_of(PAGE)
    }

    /// An anonymous private read-write mapping owned by this value (unmapped on drop).
    pub(super) struct Mapping {
        ptr: NonNull<u8>,
        /// Bytes mapped (a multiple of the page size).
        len: usize,
    }

    // SAFETY: the mapping is owned exclusively; access goes through `&self`/`&mut self`.
    unsafe impl Send for Mapping {}
    // SAFETY: shared access is read-only (`as_slice`).
    unsafe impl Sync for Mapping {}

    fn advise(ptr: *mut libc::c_void, len: usize) {
        if len >= HUGE_MIN {
            // SAFETY: the range is a mapping we own; the hint never changes its contents.
            unsafe { libc::madvise(ptr, len, libc::MADV_HUGEPAGE) };
        }
    }

    /// Faults in `len` bytes at `ptr` in one system call instead of one page fault per
    /// page during the receive's copy (Linux ≥ 5.14; elsewhere the pages fault in as before).
    /// Only ranges the message is about to fill are populated: it grows with the bytes
    /// received, so at most twice what has arrived.
    fn populate(ptr: *mut libc::c_void, len: usize) {
        if len > 0 {
            // SAFETY: the range lies inside a mapping we own; populating never changes contents.
            unsafe { libc::madvise(ptr, len, libc::MADV_POPULATE_WRITE) };
        }
    }

    impl Mapping {
        pub(super) fn new(len: usize) -> io::Result<Self> {
            let len = pages(len);
            // SAFETY: a fresh anonymous mapping; no existing memory is touched.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            advise(p, len);
            populate(p, len);
            Ok(Mapping { ptr: NonNull::new(p.cast()).ok_or_else(io::Error::last_os_error)?, len })
        }

        pub(super) fn len(&self) -> usize {
            self.len
        }

        /// Grows (moving the page-table entries, not the bytes, when the mapping must move).
        pub(super) fn resize(&mut self, len: usize) -> io::Result<()> {
            let len = pages(len);
            // SAFETY: remaps exactly the range we own; on success the old range is gone and
            // `self.ptr` is replaced before anything else reads it.
            let p = unsafe { libc::mremap(self.ptr.as_ptr().cast(), self.len, len, libc::MREMAP_MAYMOVE) };
            if p == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            advise(p, len);
            if len > self.len {
                // SAFETY: `self.len < len`: the offset lies inside the new mapping.
                populate(unsafe { p.cast::<u8>().add(self.len).cast() }, len - self.len);
            }
            self.ptr = NonNull::new(p.cast()).ok_or_else(io::Error::last_os_error)?;
            self.len = len;
            Ok(())
        }

        /// Gives back the pages past `keep` bytes (in place; failure only keeps them mapped).
        pub(super) fn shrink(&mut self, keep: usize) {
            let keep = pages(keep);
            if keep < self.len {
                // SAFETY: shrinking in place (no MREMAP_MAYMOVE) keeps `self.ptr` valid.
                let p = unsafe { libc::mremap(self.ptr.as_ptr().cast(), self.len, keep, 0) };
                if p != libc::MAP_FAILED {
                    self.len = keep;
                }
            }
        }

        pub(super) fn as_slice(&self) -> &[u8] {
            // SAFETY: `len` bytes are mapped readable and zero-initialised by the kernel.
            unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
        }

        pub(super) fn as_mut_slice(&mut self) -> &mut [u8] {
            // SAFETY: as above, and `&mut self` makes this the only reference.
            unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
        }
    }

    impl Drop for Mapping {
        fn drop(&mut self) {
            // SAFETY: unmaps the range we own; no reference to it outlives `self`.
            unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Fills a message the way `read_message` does, in reads of at most `step` bytes.
    fn fill(total: usize, frame: usize, step: usize) -> Message {
        let mut m = Message::new();
        let mut next = 0u8;
        while m.len() < total {
            let limit = (m.len() / frame + 1) * frame;
            let limit = limit.min(total);
            while m.len() < limit {
                let room = m.room(limit).unwrap();
                assert!(!room.is_empty());
                let n = room.len().min(step);
                for b in &mut room[..n] {
                    *b = next;
                    next = next.wrapping_add(1);
                }
                m.advance(n);
            }
        }
        m.finish();
        m
    }

    #[test]
    fn small_messages_stay_on_the_heap_and_large_ones_are_mapped() {
        let small = fill(1000, 300, 77);
        assert!(!small.is_mapped());
        assert_eq!(small.len(), 1000);
        let big = fill(5 * MAP_MIN + 123, 1 << 20, 200_000);
        assert!(cfg!(not(target_os = "linux")) || big.is_mapped());
        for (i, b) in big.iter().enumerate() {
            assert_eq!(*b, i as u8, "byte {i}");
        }
        let v = big.into_vec();
        assert_eq!(v.len(), 5 * MAP_MIN + 123);
        assert!(v.iter().enumerate().all(|(i, b)| *b == i as u8));
    }

    #[test]
    fn growth_is_bounded_by_what_arrived() {
        let mut m = Message::new();
        // A frame announcing 1 GiB: the first room is GROW_MIN, not the announced length.
        assert_eq!(m.room(1 << 30).unwrap().len(), GROW_MIN);
        m.advance(GROW_MIN);
        assert_eq!(m.room(1 << 30).unwrap().len(), GROW_MIN);
        m.advance(10);
        // Room is what is left of the current capacity, never past the frame's end.
        assert_eq!(m.room(GROW_MIN + 20).unwrap().len(), 10);
    }

    #[test]
    fn empty_message() {
        let mut m = Message::new();
        assert!(m.room(0).unwrap().is_empty());
        m.finish();
        assert!(m.is_empty());
        assert_eq!(m.try_into_vec().unwrap(), Vec::<u8>::new());
    }
}
