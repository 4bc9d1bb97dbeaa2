"""Placeholder page of the audit app: the app renders audited folders once `score` exists.

The app only reads outputs of `audit/`; it never computes scores itself.
"""

import streamlit as st

st.set_page_config(page_title="shortcut-audit", layout="wide")
st.title("shortcut-audit")
st.info("The audit app opens an audited folder (`shortcut-audit app AUDIT_DIR`) once scoring lands. "
        "Today, `shortcut-audit ingest` writes the pairs table it will read.")
