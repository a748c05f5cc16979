//! What a script run really holds in memory, counted by the allocator.
//!
//! Rhai's size limits measure values (a string, an array, a map) and miss what they do not
//! look at — map keys, closure captures, shared copies — so they cannot bound a run's memory.
//! Instead every allocation the process makes goes through a counting allocator
//! ([`CountingAllocator`]): an allocation made on a thread that has entered a run's
//! [`Account`] is charged to that run, and freeing it (on any thread) gives it back, whatever
//! the value's shape. The script thread enters its run's account for the whole run, so host
//! calls it makes count too: what they hold, they hold for the script.
//!
//! The allocator is this crate's `#[global_allocator]`, so every binary that links the
//! runtime (the CLI, the tests, the benches) counts, and a binary cannot install another one
//! by mistake (the link fails). [`self_test`] still checks that counting is in effect before a
//! run starts, and a run is refused if it is not: a memory limit that silently measures
//! nothing is the hole this closes.
//!
//! Cost: each allocation carries an 8-byte header (the run it is charged to) and a
//! thread-local lookup; allocations outside any run are not counted.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::marker::PhantomData;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[global_allocator]
static ALLOCATOR: CountingAllocator = CountingAllocator;

/// Runs counted at once. A run past this many concurrent ones is refused.
pub(super) const SLOTS: usize = 1024;
/// A slot's state packs the owner's tag (high bits) with its live bytes (low bits), so a
/// late free of an ended run's allocation can never be charged to the run that took its slot.
const BYTES_BITS: u32 = 40;
const BYTES_MASK: u64 = (1 << BYTES_BITS) - 1;
const TAGS: u64 = (1 << (64 - BYTES_BITS)) - 1;

#[derive(Debug)]
struct Slot {
    /// `tag << BYTES_BITS | live bytes`; tag 0 is a free slot.
    state: AtomicU64,
    /// Most live bytes seen since the slot was claimed, the moment inside an operation
    /// included.
    peak: AtomicU64,
}

static TABLE: [Slot; SLOTS] = [const {
    Slot {
        state: AtomicU64::new(0),
        peak: AtomicU64::new(0),
    }
}; SLOTS];

thread_local! {
    /// The account this thread's allocations are charged to (0: none). Const-initialised and
    /// without a destructor, so the allocator may read it at any time.
    static CURRENT: Cell<usize> = const { Cell::new(0) };
}

/// The slot and owner tag of account `id` (never tag 0).
fn place(id: usize) -> (&'static Slot, u64) {
    let tag = (id / SLOTS) as u64 % TAGS + 1;
    (&TABLE[id % SLOTS], tag)
}

/// Adds `bytes` to (or takes them from) account `id`, if it still owns its slot.
#[inline]
fn charge(id: usize, bytes: usize, add: bool) {
    if id == 0 {
        return;
    }
    let (slot, tag) = place(id);
    let bytes = bytes as u64;
    let mut current = slot.state.load(Ordering::Relaxed);
    loop {
        if current >> BYTES_BITS != tag {
            return;
        }
        let live = current & BYTES_MASK;
        let live = if add {
            (live + bytes).min(BYTES_MASK)
        } else {
            live.saturating_sub(bytes)
        };
        match slot.state.compare_exchange_weak(
            current,
            tag << BYTES_BITS | live,
            Ordering::Relaxed,
            Ordering::Relaxed,
        ) {
            Ok(_) => {
                // Most allocations do not raise the peak: a load spares the read-modify-write.
                if add && live > slot.peak.load(Ordering::Relaxed) {
                    slot.peak.fetch_max(live, Ordering::Relaxed);
                }
                return;
            }
            Err(actual) => current = actual,
        }
    }
}

/// The system allocator, with each block prefixed by the id of the account it is charged to.
///
/// Own code rather than a crate: the one crate with per-thread accounting groups and frees
/// attributed to their group (`tracking-allocator` 0.4) implements `realloc` as allocate, copy,
/// free, and Rhai's strings (`smartstring`) call `realloc` on every character pushed, so
/// building a 1 MB string took over a minute. Here `realloc` is the system's.
#[derive(Debug)]
pub(super) struct CountingAllocator;

/// The block asked of the system for `layout`, and the offset of the caller's part in it. The
/// account id sits in the block's first word; the offset depends only on the alignment, so it
/// is the same for a block and its reallocation.
fn wrapped(layout: Layout) -> Option<(Layout, usize)> {
    let (block, offset) = Layout::new::<usize>().extend(layout).ok()?;
    Some((block.pad_to_align(), offset))
}

impl CountingAllocator {
    /// A block from `system` for `layout`, its first word set to this thread's account.
    ///
    /// # Safety
    /// As `GlobalAlloc::alloc`: `layout` has a non-zero size.
    #[expect(unsafe_code, reason = "part of the global allocator")]
    unsafe fn alloc_from(&self, layout: Layout, system: impl FnOnce(Layout) -> *mut u8) -> *mut u8 {
        let Some((block, offset)) = wrapped(layout) else {
            return std::ptr::null_mut();
        };
        let base = system(block);
        if base.is_null() {
            return base;
        }
        let id = CURRENT.try_with(Cell::get).unwrap_or(0);
        // SAFETY: `base` is a fresh block of at least a usize, usize-aligned.
        unsafe { base.cast::<usize>().write(id) };
        charge(id, block.size(), true);
        // SAFETY: `offset` is within the block.
        unsafe { base.add(offset) }
    }
}

// SAFETY (the whole impl): every block handed out is `offset` bytes into a system block of the
// `wrapped` layout, whose first word (usize-aligned: the block's alignment is at least a
// usize's) holds an account id; `dealloc` and `realloc` receive the caller's layout, so they
// recompute the same offset and block layout and hand the system back exactly what it gave.
#[expect(
    unsafe_code,
    reason = "a global allocator is unsafe by definition; see CountingAllocator for why it is ours"
)]
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.alloc_from(layout, |block| System.alloc(block)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // The system's zeroed allocation, so large zeroed blocks stay lazily mapped.
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { self.alloc_from(layout, |block| System.alloc_zeroed(block)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some((block, offset)) = wrapped(layout) else {
            return;
        };
        // SAFETY: `ptr` came from `alloc`/`realloc` with this layout, so it is `offset` into
        // a block of layout `block` whose first word is its account id.
        let base = unsafe { ptr.sub(offset) };
        let id = unsafe { base.cast::<usize>().read() };
        charge(id, block.size(), false);
        unsafe { System.dealloc(base, block) };
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let Ok(new_layout) = Layout::from_size_align(new_size, layout.align()) else {
            return std::ptr::null_mut();
        };
        let (Some((block, offset)), Some((new_block, _))) = (wrapped(layout), wrapped(new_layout))
        else {
            return std::ptr::null_mut();
        };
        // Rhai's strings ask for the same size on every character pushed.
        if new_block.size() == block.size() {
            return ptr;
        }
        // SAFETY: as in `dealloc`; the system moves the id with the block's contents, and the
        // caller's part stays at the same offset (same alignment).
        let base = unsafe { ptr.sub(offset) };
        let id = unsafe { base.cast::<usize>().read() };
        let new_base = unsafe { System.realloc(base, block, new_block.size()) };
        if new_base.is_null() {
            return new_base;
        }
        // The block moves to the account of the thread that resizes it: growing a block made
        // outside the run (or by another run) on the script thread is the run's memory.
        let current = CURRENT.try_with(Cell::get).unwrap_or(0);
        if current != id {
            // SAFETY: the first word of the (moved) block is still its id slot.
            unsafe { new_base.cast::<usize>().write(current) };
        }
        charge(id, block.size(), false);
        charge(current, new_block.size(), true);
        unsafe { new_base.add(offset) }
    }
}

/// Why a run cannot be counted.
#[derive(Debug, thiserror::Error)]
pub(super) enum AccountingError {
    #[error(
        "memory accounting is not in effect in this process (warden-runtime's counting \
         allocator is not the global allocator), so a script's memory limit could not be \
         enforced; run scripts from a binary that links warden-runtime and declares no \
         #[global_allocator] of its own"
    )]
    NotInEffect,
    #[error("{SLOTS} script runs are already being counted; try again when one has ended")]
    Full,
}

/// One run's memory account. Enter it on the thread that runs the script; read it anywhere
/// through its [`Meter`].
#[derive(Debug)]
pub(super) struct Account {
    id: usize,
    meter: Meter,
}

/// A cheap, shareable view of an account's counters.
#[derive(Debug, Clone, Copy)]
pub(super) struct Meter {
    slot: &'static Slot,
    tag: u64,
}

impl Meter {
    /// Bytes the run holds now.
    #[cfg(test)]
    pub(super) fn live(&self) -> u64 {
        let state = self.slot.state.load(Ordering::Relaxed);
        if state >> BYTES_BITS == self.tag {
            state & BYTES_MASK
        } else {
            0
        }
    }

    /// Whether two accounts use the same slot (one took it after the other closed).
    #[cfg(test)]
    pub(super) fn shares_slot_with(&self, other: &Meter) -> bool {
        std::ptr::eq(self.slot, other.slot)
    }

    /// Most bytes the run has held at any moment so far (inside an operation too).
    pub(super) fn peak(&self) -> u64 {
        if self.slot.state.load(Ordering::Relaxed) >> BYTES_BITS == self.tag {
            self.slot.peak.load(Ordering::Relaxed)
        } else {
            0
        }
    }
}

/// While alive, this thread's allocations are charged to an account.
#[derive(Debug)]
pub(super) struct Charged<'a> {
    previous: usize,
    _account: PhantomData<&'a mut Account>,
    /// Restores this thread's account: it must drop where it was made.
    _not_send: PhantomData<*const ()>,
}

impl Drop for Charged<'_> {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|current| current.set(self.previous));
    }
}

impl Account {
    /// Opens an account for a new run.
    pub(super) fn open() -> Result<Account, AccountingError> {
        static NEXT_ID: AtomicUsize = AtomicUsize::new(1);
        // Ids are never reused; take ids until one maps to a free slot.
        for _ in 0..SLOTS * 2 {
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let (slot, tag) = place(id);
            if slot
                .state
                .compare_exchange(0, tag << BYTES_BITS, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
            {
                slot.peak.store(0, Ordering::Relaxed);
                return Ok(Account {
                    id,
                    meter: Meter { slot, tag },
                });
            }
        }
        Err(AccountingError::Full)
    }

    pub(super) fn meter(&self) -> Meter {
        self.meter
    }

    /// Charges this thread's allocations to the run until the guard is dropped.
    pub(super) fn enter(&mut self) -> Charged<'_> {
        let previous = CURRENT.with(|current| current.replace(self.id));
        Charged {
            previous,
            _account: PhantomData,
            _not_send: PhantomData,
        }
    }
}

impl Drop for Account {
    fn drop(&mut self) {
        // Frees still to come (values the run handed back) no longer count anywhere.
        self.meter.slot.state.store(0, Ordering::Release);
    }
}

/// Checks (once per process, on this thread) that allocations are really counted: a run must
/// not start under a limit that measures nothing.
///
/// Only a definite answer is kept: a probe that finds every slot taken (`Full`) says nothing
/// about counting, so the next call probes again.
///
/// Known limit: process-global state some library creates lazily on first use (on the script
/// thread, inside a run) is charged to the run that first triggers it and never given back;
/// it is small and once per process, but it counts against that run's limit.
pub(super) fn self_test() -> Result<(), AccountingError> {
    static COUNTED: OnceLock<bool> = OnceLock::new();
    let counted = match COUNTED.get() {
        Some(&counted) => counted,
        None => {
            let counted = match probe() {
                Ok(()) => true,
                Err(AccountingError::NotInEffect) => false,
                Err(full @ AccountingError::Full) => return Err(full),
            };
            *COUNTED.get_or_init(|| counted)
        }
    };
    if counted {
        Ok(())
    } else {
        Err(AccountingError::NotInEffect)
    }
}

fn probe() -> Result<(), AccountingError> {
    const PROBE_BYTES: usize = 64 * 1024;
    let mut account = Account::open()?;
    let meter = account.meter();
    let counted = {
        let _inside = account.enter();
        let probe = std::hint::black_box(vec![1u8; PROBE_BYTES]);
        let counted = meter.peak() >= PROBE_BYTES as u64;
        drop(probe);
        counted
    };
    if counted {
        Ok(())
    } else {
        Err(AccountingError::NotInEffect)
    }
}
