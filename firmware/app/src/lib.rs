//! What every Facemark board runs, whatever its chip: the serving loop
//! ([`facemark_serve::Server`]) over the embedded model file, its log lines,
//! the SysTick clock and the painted stack. Each board is its own crate
//! under `boards/` (as embassy lays them out), with its own target, runner,
//! `memory.x` and peripherals; its `main` sets up the UART and calls
//! [`run`]. Nothing here allocates; the arena, which also receives the
//! request frames, is a static.
#![no_std]

pub mod clock;
pub mod dual;
#[cfg(feature = "kernel-check")]
pub mod kernel_check;
pub mod stack;
pub mod uart;

use facemark_core::Arena;
use facemark_core::network::ARENA_LEN;
use facemark_serve::{Event, Server};

/// The activation arena (36.75 KiB), also the request frame buffer: a
/// static, so that the stack stays small.
static mut ARENA: Arena = [0; ARENA_LEN];

/// Runs once, from the board's entry point, after the clock is set up;
/// `halt` ends the program when the link ends.
pub fn run<B, L>(board: B, link: &mut L, halt: fn() -> !) -> !
where
    B: facemark_serve::Board,
    L: facemark_serve::Link<Error = core::convert::Infallible>,
{
    run_with_weights_in(board, link, halt, 0..0, &mut [])
}

/// As [`run`], with the stored weights of `layers` copied into `copy` at
/// boot and read from there (the Pico 2 puts its conv weights in SRAM:
/// its flash is read through a 16 KB cache, which they overflow).
pub fn run_with_weights_in<B, L>(
    board: B,
    link: &mut L,
    halt: fn() -> !,
    layers: core::ops::Range<usize>,
    copy: &'static mut [u8],
) -> !
where
    B: facemark_serve::Board,
    L: facemark_serve::Link<Error = core::convert::Infallible>,
{
    // SAFETY: `run` is called once, from the entry point, and never returns:
    // this is the only reference to ARENA ever made.
    let arena = unsafe { &mut *core::ptr::addr_of_mut!(ARENA) };
    let model_file = facemark_model::file();
    let mut server = Server::new(board, model_file, arena);
    if !layers.is_empty() {
        let n = copy.len();
        if server.read_weights_from(layers.clone(), copy) {
            defmt::info!(
                "weights of layers {=usize}..{=usize} read from RAM ({=usize} bytes)",
                layers.start,
                layers.end,
                n
            );
        } else {
            defmt::warn!(
                "weights stay in flash: no model, or {=usize} bytes are too few",
                n
            );
        }
    }
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
    halt()
}

/// Logs one answered request (shared by the boards' `Board::event`).
pub fn log_event(e: Event<'_>) {
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
