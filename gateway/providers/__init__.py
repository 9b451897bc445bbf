"""Provider adapters: one module per provider behind one small interface, chosen by type name in the registry."""
