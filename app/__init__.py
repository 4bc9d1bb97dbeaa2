"""Streamlit audit app: renders precomputed audits from `audit/`, never scores."""
