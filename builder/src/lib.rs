//! imgforge: profile -> plan -> verified installer media.
//!
//! The flow (see `docs/how-it-works.md`): parse and validate the profile
//! ([`profile`]), compile it into a [`imgforge_plan::Plan`] ([`compile`]),
//! verify the ISO ([`verify`]), read what the installer needs from it
//! ([`iso`]) and assemble the USB image ([`image`]). [`qemu`] boots the
//! result for tests; [`serve`] serves files to network installs and
//! collects their events. [`cli`] is the `imgforge` command line over all of
//! them; [`progress`] is how their long operations report themselves.

#![forbid(unsafe_code)]

pub mod apt;
pub mod build;
pub mod cli;
pub mod compile;
pub mod docs;
pub mod fetch;
pub mod image;
pub mod iso;
pub mod profile;
pub mod progress;
pub mod qemu;
pub mod render;
pub mod serve;
#[cfg(test)]
mod test_support;
pub mod verify;
