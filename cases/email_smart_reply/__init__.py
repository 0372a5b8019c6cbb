"""Email smart reply and smart compose (Gmail's Smart Reply), end to end.

    casebook run email-smart-reply                         # built-in email threads, < 3 minutes
    casebook run email-smart-reply --data dailydialog:~/data/dialogues_text.txt
    casebook serve email-smart-reply

Triggering (suggest at all?) -> a k-anonymous response set clustered by meaning -> reply
selection by a dual encoder (MiniLM fine-tuned, or a small encoder from scratch) against BM25 and
most-frequent baselines -> three diverse suggestions, served from ONNX Runtime + faiss; smart
compose completes the reply as it is typed.
"""
