//! A 64-bit tick counter from SysTick: the 24-bit down-counter runs from the
//! core clock and its exception counts the wraps.

use core::sync::atomic::{AtomicU32, Ordering};
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m::peripheral::{SCB, SYST};
use cortex_m_rt::exception;

const RELOAD: u32 = 0x00ff_ffff;
static WRAPS: AtomicU32 = AtomicU32::new(0);

/// Starts SysTick on the core clock, wrapping every 2^24 ticks.
pub fn start(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(RELOAD);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Relaxed);
}

/// Core clock ticks since [`start`].
pub fn ticks() -> u64 {
    cortex_m::interrupt::free(|_| {
        let mut wraps = WRAPS.load(Ordering::Relaxed) as u64;
        let mut val = SYST::get_current();
        // A wrap that happened but is not counted yet (its exception waits
        // for this critical section): count it, and read the value after it.
        if SCB::is_pendst_pending() {
            val = SYST::get_current();
            wraps += 1;
        }
        (wraps << 24) + u64::from(RELOAD - (val & RELOAD))
    })
}
