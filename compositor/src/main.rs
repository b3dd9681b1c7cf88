fn main() {
    println!("syncbridge: compositor not yet implemented");
}
