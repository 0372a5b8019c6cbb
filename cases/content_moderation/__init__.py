"""Content moderation: posts and ads, text and images, from known-bad matching to served policies.

    casebook run content-moderation                         # built-in posts, ads and images
    casebook run content-moderation --data olid:~/data/olid --eval hatecheck:hatecheck.csv
    casebook serve content-moderation --port 8000

See README.md for the design walk and the numbers.
"""
