"""cmdb-asso: instance associations for a BlueKing-compatible CMDB."""
