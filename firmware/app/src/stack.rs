//! Stack depth measured by painting: at boot every free word below the stack
//! pointer gets a pattern; the lowest word that lost it is the deepest the
//! stack has been.

use core::ptr::{addr_of, read_volatile, write_volatile};

const PAINT: u32 = 0xfeed_c0de;

unsafe extern "C" {
    /// End of .bss/.uninit: the lowest address the stack may reach (cortex-m-rt).
    static _stack_end: u32;
    /// Initial stack pointer, the top of RAM (cortex-m-rt).
    static _stack_start: u32;
}

fn bottom() -> usize {
    addr_of!(_stack_end) as usize
}
fn top() -> usize {
    addr_of!(_stack_start) as usize
}

/// Bytes between the end of the statics and the top of RAM.
pub fn size() -> usize {
    top() - bottom()
}

/// Paints the free stack (call first thing at boot).
#[inline(never)]
pub fn paint() {
    // Leave the words near the current frame alone.
    let sp = cortex_m::register::msp::read() as usize;
    let end = sp.saturating_sub(256) & !3;
    let mut p = bottom();
    while p < end {
        // SAFETY: [bottom, sp - 256) is RAM that nothing uses yet: above the
        // statics, below the live stack.
        unsafe { write_volatile(p as *mut u32, PAINT) };
        p += 4;
    }
}

/// The deepest the stack has been since [`paint`], in bytes.
pub fn high_water() -> usize {
    let mut p = bottom();
    let top = top();
    // SAFETY: reads words of RAM between the statics and the top of the stack.
    while p < top && unsafe { read_volatile(p as *const u32) } == PAINT {
        p += 4;
    }
    top - p
}
