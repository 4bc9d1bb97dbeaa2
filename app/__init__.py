"""Streamlit audit app: renders precomputed audits through `audit.appdata`; it never scores.
Run it with `shortcut-audit app AUDIT_DIR`."""
