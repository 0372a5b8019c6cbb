"""Mobile keyboard: spell check, word completion and next-word prediction on the device.

    casebook run mobile-keyboard                       # built-in text, preset "fast" (~1-2 min)
    casebook run mobile-keyboard --preset full --corpus ~/data/gutenberg \
        --spell-test tsv:~/data/norvig-testset1.tsv
    casebook serve mobile-keyboard                     # POST /suggest on 127.0.0.1:8000

See README.md for the design walk and the measured numbers.
"""
