//! The Armv7E-M DSP instructions the Cortex-M kernels build on, one function
//! each: inline `asm!` on Cortex-M (the `core::arch::arm` intrinsics are
//! unstable), and the same arithmetic in plain Rust elsewhere, so that the
//! kernels' data layouts and transforms run in the host's unit tests too.
//!
//! A "pair" is one `u32` holding two int16 halves `(lo, hi)`.

#[cfg(all(target_arch = "arm", feature = "cortex-m-dsp"))]
use core::arch::asm;

#[cfg(all(target_arch = "arm", feature = "cortex-m-dsp"))]
macro_rules! dsp {
    ($(#[$doc:meta])* fn $name:ident($($a:ident),*) -> $t:ty = $insn:literal;) => {
        $(#[$doc])*
        #[inline(always)]
        pub fn $name($($a: u32),*) -> $t {
            let r: $t;
            // SAFETY: register-only arithmetic (these set at most the Q and
            // GE flags, which no Rust code reads).
            unsafe {
                asm!($insn, r = lateout(reg) r, $($a = in(reg) $a),*,
                    options(pure, nomem, nostack))
            };
            r
        }
    };
}

#[cfg(all(target_arch = "arm", feature = "cortex-m-dsp"))]
mod arm {
    use super::*;
    dsp! {
        /// Bytes 0 and 2 of `x`, sign-extended to a pair.
        fn sxtb16(x) -> u32 = "sxtb16 {r}, {x}";
    }
    dsp! {
        /// Bytes 1 and 3 of `x`, sign-extended to a pair.
        fn sxtb16_ror8(x) -> u32 = "sxtb16 {r}, {x}, ror #8";
    }
    dsp! {
        /// Lane-wise `a + b` of two pairs (wrapping per lane).
        fn sadd16(a, b) -> u32 = "sadd16 {r}, {a}, {b}";
    }
    dsp! {
        /// Lane-wise `a - b` of two pairs (wrapping per lane).
        fn ssub16(a, b) -> u32 = "ssub16 {r}, {a}, {b}";
    }

    /// `acc + a.lo * b.lo + a.hi * b.hi`.
    #[inline(always)]
    pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        let r: i32;
        // SAFETY: register-only arithmetic (SMLAD sets only the Q flag).
        unsafe {
            asm!("smlad {r}, {a}, {b}, {c}", r = lateout(reg) r, a = in(reg) a, b = in(reg) b,
                c = in(reg) acc, options(pure, nomem, nostack))
        };
        r
    }
}

#[cfg(all(target_arch = "arm", feature = "cortex-m-dsp"))]
pub use arm::*;

#[cfg(not(all(target_arch = "arm", feature = "cortex-m-dsp")))]
mod emulated {
    #[inline(always)]
    fn lo(x: u32) -> i32 {
        x as u16 as i16 as i32
    }
    #[inline(always)]
    fn hi(x: u32) -> i32 {
        (x >> 16) as u16 as i16 as i32
    }
    #[inline(always)]
    fn pack(lo: i32, hi: i32) -> u32 {
        (lo as u16 as u32) | ((hi as u16 as u32) << 16)
    }
    pub fn sxtb16(x: u32) -> u32 {
        pack(x as u8 as i8 as i32, (x >> 16) as u8 as i8 as i32)
    }
    pub fn sxtb16_ror8(x: u32) -> u32 {
        sxtb16(x.rotate_right(8))
    }
    pub fn sadd16(a: u32, b: u32) -> u32 {
        pack(lo(a) + lo(b), hi(a) + hi(b))
    }
    pub fn ssub16(a: u32, b: u32) -> u32 {
        pack(lo(a) - lo(b), hi(a) - hi(b))
    }
    pub fn smlad(a: u32, b: u32, acc: i32) -> i32 {
        acc.wrapping_add(lo(a) * lo(b)).wrapping_add(hi(a) * hi(b))
    }
}

#[cfg(not(all(target_arch = "arm", feature = "cortex-m-dsp")))]
pub use emulated::*;

/// Four int8 (a `chunks_exact(4)` item) as one little-endian word.
#[inline(always)]
pub fn chunk_word(b: &[i8]) -> u32 {
    u32::from_le_bytes([b[0] as u8, b[1] as u8, b[2] as u8, b[3] as u8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_emulation_is_the_instructions_arithmetic() {
        let x = u32::from_le_bytes([0x80, 0x7f, 0xff, 0x01]);
        assert_eq!(sxtb16(x), 0xffff_ff80);
        assert_eq!(sxtb16_ror8(x), 0x0001_007f);
        let (a, b) = (0x7fff_8000u32, 0x0001_ffffu32);
        assert_eq!(
            sadd16(a, b),
            0x8000_7fff,
            "lanes wrap, no carry between them"
        );
        assert_eq!(ssub16(a, b), 0x7ffe_8001);
        assert_eq!(smlad(0xffff_0002, 0x0003_0004, 10), 10 + 8 - 3);
    }
}
