//! The boards' polled UARTs: one byte at a time, the core asleep (WFI)
//! until the receive interrupt while nothing waits.

use core::convert::Infallible;
use core::ptr::{read_volatile, write_volatile};

use facemark_serve::Link;

/// Waits for one received byte with the core asleep. `take` returns the
/// byte if one waits; it runs with interrupts masked, and so does
/// `before_sleep` just before WFI. A pending interrupt wakes WFI even
/// while masked, and unmasking then runs its handler: no byte arrives
/// unseen between the check and the sleep.
pub fn read_byte_asleep(
    mut take: impl FnMut() -> Option<u8>,
    mut before_sleep: impl FnMut(),
) -> u8 {
    loop {
        cortex_m::interrupt::disable();
        if let Some(b) = take() {
            // SAFETY: interrupts were enabled before this critical section.
            unsafe { cortex_m::interrupt::enable() };
            return b;
        }
        before_sleep();
        cortex_m::asm::wfi();
        // SAFETY: as above.
        unsafe { cortex_m::interrupt::enable() };
    }
}

const DATA: usize = 0x00;
const STATE: usize = 0x04;
const CTRL: usize = 0x08;
const INTCLEAR: usize = 0x0c;
const BAUDDIV: usize = 0x10;
const STATE_TX_FULL: u32 = 1 << 0;
const STATE_RX_FULL: u32 = 1 << 1;
const CTRL_TX_EN: u32 = 1 << 0;
const CTRL_RX_EN: u32 = 1 << 1;
const CTRL_RX_INT_EN: u32 = 1 << 3;
const INT_RX: u32 = 1 << 1;

/// Arm's CMSDK APB UART (the MPS2 boards' UART0), transmit and receive on,
/// its receive interrupt raised (the board enables its NVIC line and
/// calls [`CmsdkUart::clear_rx_interrupt`] from the handler).
pub struct CmsdkUart {
    base: usize,
}

impl CmsdkUart {
    /// # Safety
    ///
    /// `base` is a CMSDK UART's register block, used by nothing else.
    pub unsafe fn new(base: usize) -> Self {
        let u = Self { base };
        // SAFETY: the UART's own registers (the caller's); QEMU needs
        // BAUDDIV >= 16.
        unsafe {
            write_volatile(u.reg(BAUDDIV), 16);
            write_volatile(u.reg(CTRL), CTRL_TX_EN | CTRL_RX_EN | CTRL_RX_INT_EN);
        }
        u
    }

    fn reg(&self, offset: usize) -> *mut u32 {
        (self.base + offset) as *mut u32
    }

    /// Acknowledges the receive interrupt of the UART at `base`.
    ///
    /// # Safety
    ///
    /// `base` is the register block [`CmsdkUart::new`] was given.
    pub unsafe fn clear_rx_interrupt(base: usize) {
        // SAFETY: the caller's.
        unsafe { write_volatile((base + INTCLEAR) as *mut u32, INT_RX) };
    }
}

impl Link for CmsdkUart {
    type Error = Infallible;

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        let Some(first) = buf.first_mut() else {
            return Ok(0);
        };
        *first = read_byte_asleep(
            // SAFETY: the UART's registers; reading DATA frees the holding
            // register.
            || unsafe {
                (read_volatile(self.reg(STATE)) & STATE_RX_FULL != 0)
                    .then(|| read_volatile(self.reg(DATA)) as u8)
            },
            || {},
        );
        Ok(1)
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Infallible> {
        for &b in bytes {
            // SAFETY: the UART's registers.
            unsafe {
                while read_volatile(self.reg(STATE)) & STATE_TX_FULL != 0 {}
                write_volatile(self.reg(DATA), u32::from(b));
            }
        }
        Ok(())
    }
}
