//! The `monovirt` command line: parses arguments, sets up logging and the runtime, and
//! wires the roles of `monovirt` (the library) together.

fn main() {
    println!("monovirt");
}
