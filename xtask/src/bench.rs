pub fn run(_o: &std::path::Path) -> anyhow::Result<()> {
    Ok(())
}
