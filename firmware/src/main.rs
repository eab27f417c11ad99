//! Facemark firmware: the int8 keypoint network answering over a UART.
//!
//! The board follows from the target (see `build.rs`):
//! - `thumbv7em-none-eabihf`: Arm MPS2 AN386 (Cortex-M4F) under
//!   `qemu-system-arm`, UART0, logs through `defmt-semihosting`, cost in
//!   instructions (SysTick under `-icount shift=0`);
//! - `thumbv8m.main-none-eabihf`: Raspberry Pi Pico 2 (RP2350), UART0 on
//!   GP0/GP1, logs through `defmt-rtt`, cost in core cycles.
//!
//! Both run the same loop, [`facemark_serve::Server`], over the embedded
//! model file. Nothing here allocates; the arena, which also receives the
//! request frames, is a static.
#![no_std]
#![no_main]

mod clock;
mod stack;

#[cfg(board = "an386")]
#[path = "board/an386.rs"]
mod board;
#[cfg(board = "pico2")]
#[path = "board/pico2.rs"]
mod board;

use facemark_core::Arena;
use facemark_core::network::ARENA_LEN;
use facemark_serve::{Event, Server};

/// The activation arena (36.75 KiB), also the request frame buffer: a
/// static, so that the stack stays small.
static mut ARENA: Arena = [0; ARENA_LEN];

/// Runs once, from the board's entry point, after the clock is set up.
fn run<B, L>(board: B, link: &mut L) -> !
where
    B: facemark_serve::Board,
    L: facemark_serve::Link<Error = core::convert::Infallible>,
{
    // SAFETY: `run` is called once, from the entry point, and never returns:
    // this is the only reference to ARENA ever made.
    let arena = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    let model_file = facemark_serve::embedded_model();
    let mut server = Server::new(board, model_file, arena);
    match server.model() {
        Ok(m) => defmt::info!(
            "{} {}: model ok, {=usize} bytes, hash {=u32:08x}",
            B::NAME,
            B::FIRMWARE_VERSION,
            model_file.len(),
            m.model_hash()
        ),
        Err(_) => defmt::error!(
            "{}: model refused, every inference will get ModelInvalid: {=str}",
            B::NAME,
            server.model_error()
        ),
    }
    defmt::info!(
        "serving; stack in use {=usize} of {=usize} bytes",
        stack::high_water(),
        stack::size()
    );
    match server.serve(link) {
        Ok(()) => defmt::error!("the link ended"),
        Err(e) => match e {},
    }
    board::halt()
}

/// Logs one answered request (shared by the boards' `Board::event`).
fn log_event(e: Event<'_>) {
    match e {
        Event::BadFrame(err) => defmt::warn!("bad frame: {}", defmt::Debug2Format(&err)),
        Event::Undecodable { len } => defmt::warn!("undecodable message, {=usize} bytes", len),
        Event::Info { id } => defmt::info!("info #{=u32}", id),
        Event::WrongImageSize { id, got } => {
            defmt::warn!("infer #{=u32}: image of {=usize} bytes", id, got)
        }
        Event::ModelInvalid { id } => defmt::warn!("infer #{=u32}: no valid model", id),
        Event::Inferred { id, cost } => defmt::info!(
            "infer #{=u32}: {=u64} per inference, layers {=[?]}; stack high-water {=usize} bytes",
            id,
            cost.total,
            &cost.layers[..],
            stack::high_water()
        ),
    }
}
