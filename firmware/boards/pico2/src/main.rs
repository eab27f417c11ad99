//! Facemark on the Raspberry Pi Pico 2 (RP2350, Cortex-M33): UART0 on GP0
//! (TX) and GP1 (RX), 115200 baud 8N1; the defmt log over RTT (probe-rs);
//! cost in core cycles (SysTick on the 150 MHz system clock). Both cores
//! share every inference ([`facemark_app::dual`], tested on QEMU's
//! dual-core AN521): core 1 is launched through the SIO FIFO (the boot
//! ROM's handshake, rp235x-hal's `Multicore`), and the cores then meet in
//! shared SRAM.
#![no_std]
#![no_main]

use core::convert::Infallible;

use defmt_rtt as _;
use facemark_app::dual::Split;
use facemark_core::network::{CONV_LAYERS, CONV_WEIGHT_BYTES};
use facemark_serve::{Board, Event, Link};
use rp235x_hal as hal;

use facemark_core::network::LAYER_COUNT;
use facemark_core::{Arena, Keypoints, Model};
use hal::clocks::Clock as _;
use hal::fugit::RateExtU32;
use hal::multicore::{Multicore, Stack};
use hal::pac::UART0;
use hal::uart::{DataBits, Enabled, StopBits, UartConfig, UartPeripheral, ValidUartPinout};

/// Tells the boot ROM that this is a secure Arm executable.
#[unsafe(link_section = ".start_block")]
#[used]
pub static IMAGE_DEF: hal::block::ImageDef = hal::block::ImageDef::secure_exe();

/// The Pico 2's crystal.
const XTAL_FREQ_HZ: u32 = 12_000_000;
/// The UART's speed (the host's `--baud`).
pub const BAUD: u32 = 115_200;

struct Uart<P: ValidUartPinout<UART0>>(UartPeripheral<Enabled, UART0, P>);

impl<P: ValidUartPinout<UART0>> Link for Uart<P> {
    type Error = Infallible;

    fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        loop {
            match self.0.read_raw(buf) {
                Ok(n) if n > 0 => return Ok(n),
                Ok(_) | Err(nb::Error::WouldBlock) => {}
                // A line error (overrun, framing, break): keep what came
                // before it; the frame's CRC catches what was lost.
                Err(nb::Error::Other(e)) => {
                    defmt::warn!("uart: {}", defmt::Debug2Format(&e.err_type));
                    if !e.discarded.is_empty() {
                        return Ok(e.discarded.len());
                    }
                }
            }
        }
    }

    fn write_all(&mut self, bytes: &[u8]) -> Result<(), Infallible> {
        self.0.write_full_blocking(bytes);
        Ok(())
    }
}

pub struct Pico2 {
    /// Both cores, or core 0 alone should core 1 not start.
    split: Split,
}

/// Core 1's stack, in words (the kernels' frames and the row buffer take
/// about 3 KiB).
static CORE1_STACK: Stack<2048> = Stack::new();

impl Board for Pico2 {
    const NAME: &'static str = "pico2 (rp2350)";
    const COST_UNIT: &'static str = "cycles";
    const FIRMWARE_VERSION: &'static str = env!("CARGO_PKG_VERSION");

    fn now(&mut self) -> u64 {
        facemark_app::clock::ticks()
    }

    fn event(&mut self, e: Event<'_>) {
        facemark_app::log_event(e);
    }

    fn infer(
        &mut self,
        model: &Model<'_>,
        arena: &mut Arena,
        image_at: usize,
        marks: &mut [u64; LAYER_COUNT],
    ) -> Option<Keypoints> {
        let mark = |i: usize| facemark_serve::set_mark(marks, i, facemark_app::clock::ticks());
        facemark_app::dual::infer(self.split, model, arena, image_at, mark)
    }
}

#[hal::entry]
fn main() -> ! {
    facemark_app::stack::paint();
    let (Some(mut pac), Some(cp)) = (hal::pac::Peripherals::take(), cortex_m::Peripherals::take())
    else {
        halt()
    };
    let mut watchdog = hal::Watchdog::new(pac.WATCHDOG);
    let Ok(clocks) = hal::clocks::init_clocks_and_plls(
        XTAL_FREQ_HZ,
        pac.XOSC,
        pac.CLOCKS,
        pac.PLL_SYS,
        pac.PLL_USB,
        &mut pac.RESETS,
        &mut watchdog,
    ) else {
        defmt::error!("clock setup failed");
        halt()
    };
    facemark_app::clock::start(cp.SYST);
    let mut sio = hal::Sio::new(pac.SIO);
    let mut cores = Multicore::new(&mut pac.PSM, &mut pac.PPB, &mut sio.fifo);
    let launched = CORE1_STACK.take().is_some_and(|stack| {
        cores.cores()[1]
            .spawn(stack, || facemark_app::dual::core1_serve())
            .is_ok()
    });
    let split = Split::after_launch(launched);
    let pins = hal::gpio::Pins::new(
        pac.IO_BANK0,
        pac.PADS_BANK0,
        sio.gpio_bank0,
        &mut pac.RESETS,
    );
    let uart_pins = (pins.gpio0.into_function(), pins.gpio1.into_function());
    let Ok(uart) = UartPeripheral::new(pac.UART0, uart_pins, &mut pac.RESETS).enable(
        UartConfig::new(BAUD.Hz(), DataBits::Eight, None, StopBits::One),
        clocks.peripheral_clock.freq(),
    ) else {
        defmt::error!("uart setup failed");
        halt()
    };
    // SAFETY: the only reference to the static, made once here.
    let copy = unsafe { &mut *core::ptr::addr_of_mut!(CONV_WEIGHTS) };
    facemark_app::run_with_weights_in(Pico2 { split }, &mut Uart(uart), halt, 0..CONV_LAYERS, copy)
}

/// The conv layers' weights in SRAM (95 KiB of the 520 KiB): flash is read
/// through a 16 KB XIP cache, and the conv kernels read these weights once
/// per group of output tiles (`facemark bench xip` models the bytes).
static mut CONV_WEIGHTS: [u8; CONV_WEIGHT_BYTES] = [0; CONV_WEIGHT_BYTES];

/// Stops here for good (a debugger can look around).
pub fn halt() -> ! {
    loop {
        cortex_m::asm::wfi();
    }
}

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    defmt::error!("panic: {}", defmt::Display2Format(info));
    halt()
}

/// Program metadata for `picotool info`.
#[unsafe(link_section = ".bi_entries")]
#[used]
pub static PICOTOOL_ENTRIES: [hal::binary_info::EntryAddr; 4] = [
    hal::binary_info::rp_cargo_bin_name!(),
    hal::binary_info::rp_cargo_version!(),
    hal::binary_info::rp_program_description!(
        c"Facemark: face keypoints over UART0 (GP0/GP1, 115200 8N1)"
    ),
    hal::binary_info::rp_program_build_attribute!(),
];
