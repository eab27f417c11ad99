//! Two cores, one inference. Core 0 serves; for each inference it posts a
//! job (the model and the arena) that core 1 is waiting for, and both run
//! their part ([`run_part`]: half the output channels of convs 1 and 2
//! and the dense layers, every other row of convs 3 and 4), meeting at a
//! barrier after each row of convs 1 and 2, at the end of convs 3 and 4
//! and around each dense layer's writes. Shared memory and atomics only, no heap: the SSE-200 (QEMU's
//! AN521) and the RP2350 both give their cores exclusive access to SRAM,
//! and SEV/WFE let a waiting core sleep until the other has moved.
//!
//! The board crate starts core 1 its own way (the SSE-200's CPUWAIT, the
//! RP2350's boot FIFO), on a stack of its own, in [`core1_serve`].

use core::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};

use facemark_core::infer::{Barrier, Part, place_image, run_part};
use facemark_core::kernels::Selected;
use facemark_core::{Arena, Keypoints, Model};

/// Each core's count of barrier arrivals: a core may pass its n-th wait
/// once the other has arrived n times too (two parties, no reset).
struct PairBarrier([AtomicU32; 2]);

/// One core's side of the barrier.
struct Side(usize);

impl Barrier for Side {
    fn wait(&self) {
        let (mine, other) = (&SHARED.barrier.0[self.0], &SHARED.barrier.0[1 - self.0]);
        let n = mine.load(Ordering::Relaxed).wrapping_add(1);
        // Release: this core's writes before the barrier reach the other
        // before the count does.
        mine.store(n, Ordering::Release);
        cortex_m::asm::sev();
        // The event register latches a SEV sent between the load and the
        // WFE, so no wake-up is lost.
        while (n.wrapping_sub(other.load(Ordering::Acquire)) as i32) > 0 {
            cortex_m::asm::wfe();
        }
    }
}

/// A barrier that does not wait: one core running one part alone, which
/// is how each part's own cost is measured.
struct Alone;

impl Barrier for Alone {
    fn wait(&self) {}
}

struct Shared {
    barrier: PairBarrier,
    /// Jobs core 0 has posted.
    posted: AtomicU32,
    /// Set by core 1 once it waits for jobs.
    core1_ready: AtomicBool,
    model: AtomicPtr<Model<'static>>,
    arena: AtomicPtr<Arena>,
}

/// Each core's own working memory for the conv rows (`run_part`'s `own`):
/// enough for whole Winograd groups of every layer (conv 4's weight block
/// and its three tile pairs take 16 KiB). 32 KiB of the Pico 2's 520 KiB.
const OWN_SCRATCH: usize = 16 * 1024;
/// Word-aligned: the Winograd buffers are words, and one word less than
/// 16 KiB holds one tile pair less (conv 4 measured 3.74M instructions a
/// part, not 2.84M).
#[repr(C, align(4))]
struct Scratch([[i8; OWN_SCRATCH]; 2]);
static mut SCRATCH: Scratch = Scratch([[0; OWN_SCRATCH]; 2]);

/// Core `core`'s working memory.
///
/// # Safety
///
/// Only core `core` calls this, and uses one result at a time.
unsafe fn own_scratch(core: usize) -> &'static mut [i8] {
    // The rows start the repr(C) struct.
    let row = core::ptr::addr_of_mut!(SCRATCH)
        .cast::<[i8; OWN_SCRATCH]>()
        .wrapping_add(core.min(1));
    // SAFETY: one of the two rows, each core only its own (the caller's
    // promise).
    unsafe { &mut *row }
}

static SHARED: Shared = Shared {
    barrier: PairBarrier([AtomicU32::new(0), AtomicU32::new(0)]),
    posted: AtomicU32::new(0),
    core1_ready: AtomicBool::new(false),
    model: AtomicPtr::new(core::ptr::null_mut()),
    arena: AtomicPtr::new(core::ptr::null_mut()),
};

/// Core 1's life once started: waits for each job core 0 posts and runs
/// part 1 of it.
pub fn core1_serve() -> ! {
    let mut done = SHARED.posted.load(Ordering::Acquire);
    SHARED.core1_ready.store(true, Ordering::Release);
    cortex_m::asm::sev();
    loop {
        while SHARED.posted.load(Ordering::Acquire) == done {
            cortex_m::asm::wfe();
        }
        done = done.wrapping_add(1);
        let (model, arena) = (
            SHARED.model.load(Ordering::Relaxed),
            SHARED.arena.load(Ordering::Relaxed),
        );
        // SAFETY: core 0 stored both before posting the job (Acquire
        // above), and keeps them alive and untouched until its own part
        // returns, which is after this part's last use of them: the
        // parts' final barrier (see `infer_on_both`).
        let model = unsafe { &*model };
        let part = Part::new(1, 2).expect("part 1 of 2");
        // SAFETY: this is core 1, and the loop holds one use at a time.
        let own = unsafe { own_scratch(1) };
        // SAFETY: core 0 runs part 0 at the same time with the same model
        // and arena, and the barrier has exactly the two of them.
        let _ = unsafe { run_part::<Selected>(model, arena, part, &Side(1), own, |_| {}) };
    }
}

/// How a board shares its inferences between the cores.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    /// Each core computes its part ([`run_part`]) at once with the other.
    BothCores,
    /// Core 0 alone: core 1 did not start, or a one-core build.
    OneCore,
    /// Only part `k` of 2, on core 0 (the other part is not computed, so
    /// the keypoints are not the network's): one core's instructions,
    /// which `facemark bench board --peer` reports per core.
    OnePart(usize),
}

impl Split {
    /// Once a board has tried to launch core 1 (`launched`): both cores if
    /// core 1 then reached [`core1_serve`] within a million polls (it
    /// needs a few hundred instructions), else core 0 alone; logged.
    pub fn after_launch(launched: bool) -> Self {
        let started = launched
            && (0..1_000_000).any(|_| {
                core::hint::spin_loop();
                SHARED.core1_ready.load(Ordering::Acquire)
            });
        if started {
            defmt::info!("core 1 started: inferences run on both cores");
            Split::BothCores
        } else {
            defmt::error!("core 1 did not start: inferences run on core 0 alone");
            Split::OneCore
        }
    }
}

/// One inference on the image at `image_at` of the arena, shared as
/// `split` says, calling `on_layer(i)` once layer `i` is done (the boards'
/// `Board::infer`). `None` if the image does not fit.
pub fn infer(
    split: Split,
    model: &Model<'_>,
    arena: &mut Arena,
    image_at: usize,
    on_layer: impl FnMut(usize),
) -> Option<Keypoints> {
    match split {
        Split::BothCores => infer_on_both(model, arena, image_at, on_layer),
        Split::OneCore => infer_alone(model, arena, image_at, Part::new(0, 1)?, on_layer),
        Split::OnePart(k) => infer_alone(model, arena, image_at, Part::new(k, 2)?, on_layer),
    }
}

/// Core 0's side of an inference on both cores: the image at `image_at`
/// of the arena goes where the network reads it, core 1 gets the job, and
/// this core runs part 0, calling `on_layer(i)` once layer `i` is done on
/// both. `None` if the image does not fit. Only once core 1 has started
/// ([`Split::after_launch`]).
fn infer_on_both(
    model: &Model<'_>,
    arena: &mut Arena,
    image_at: usize,
    on_layer: impl FnMut(usize),
) -> Option<Keypoints> {
    place_image(arena, image_at)?;
    let arena: *mut Arena = arena;
    let model_ptr: *const Model<'_> = model;
    // Core 1 sees the model only during the job, while `model` lives.
    SHARED.model.store(
        model_ptr.cast::<Model<'static>>().cast_mut(),
        Ordering::Relaxed,
    );
    SHARED.arena.store(arena, Ordering::Relaxed);
    SHARED.posted.fetch_add(1, Ordering::Release);
    cortex_m::asm::sev();
    let part = Part::new(0, 2).expect("part 0 of 2");
    // SAFETY: only core 0 serves, one inference at a time.
    let own = unsafe { own_scratch(0) };
    // SAFETY: core 1 runs part 1 with the same model and arena (posted
    // above), nothing else touches the arena until this returns (the
    // caller's `&mut`), and the barrier has exactly the two parts.
    unsafe { run_part::<Selected>(model, arena, part, &Side(0), own, on_layer) }
}

/// `part` alone on core 0, with core 0's working memory: the whole
/// inference on one core when it is the only part (the peer the two-core
/// split is measured against, with the same memory), or one core's share.
fn infer_alone(
    model: &Model<'_>,
    arena: &mut Arena,
    image_at: usize,
    part: Part,
    on_layer: impl FnMut(usize),
) -> Option<Keypoints> {
    place_image(arena, image_at)?;
    // SAFETY: only core 0 serves, one inference at a time.
    let own = unsafe { own_scratch(0) };
    // SAFETY: one part at a time on this core, with a barrier that does not
    // wait; the arena is this call's alone (`&mut`).
    let kp = unsafe { run_part::<Selected>(model, arena, part, &Alone, own, on_layer) };
    Some(kp.unwrap_or(Keypoints {
        unit: [0.0; facemark_core::network::OUTPUTS],
    }))
}
