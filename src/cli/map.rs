//! `spdk-mirror map`: where block X lives.

use clap::Args;
use serde::Serialize;

use super::bad_input;
use crate::cli::geometry::GeometryArgs;

#[derive(Args)]
pub struct MapArgs {
    #[command(flatten)]
    geo: GeometryArgs,
    /// Mirror block to look up.
    #[arg(long)]
    lba: u64,
    /// Print one JSON line: {"data_blocks":D,"copies":[{"leg":L,"lba":Y},…]}.
    #[arg(long)]
    json: bool,
}

/// Field order is part of the output format: `data_blocks` first, each copy `leg` then `lba`.
#[derive(Serialize)]
struct MapJson {
    data_blocks: u64,
    copies: Vec<CopyJson>,
}

#[derive(Serialize)]
struct CopyJson {
    leg: u32,
    lba: u64,
}

pub fn run(args: MapArgs) -> i32 {
    let geo = match args.geo.geometry() {
        Ok(g) => g,
        Err(e) => return bad_input(e),
    };
    let copies = match geo.map(args.lba) {
        Ok(c) => c,
        Err(e) => return bad_input(e),
    };
    if args.json {
        let out = MapJson {
            data_blocks: geo.data_blocks(),
            copies: copies
                .as_slice()
                .iter()
                .map(|c| CopyJson { leg: c.leg, lba: c.lba })
                .collect(),
        };
        println!("{}", serde_json::to_string(&out).expect("map output serialises"));
    } else {
        println!(
            "{} {}{} legs, {} data blocks of {} bytes; block {} is on:",
            geo.level(),
            if geo.chunk_blocks() > 0 {
                format!("{} ", geo.layout())
            } else {
                String::new()
            },
            geo.legs(),
            geo.data_blocks(),
            geo.block_size(),
            args.lba
        );
        for c in copies.as_slice() {
            println!("  leg {} lba {}", c.leg, c.lba);
        }
    }
    0
}
