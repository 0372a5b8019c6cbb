"""The case studies, one self-contained package each. No case imports another."""
