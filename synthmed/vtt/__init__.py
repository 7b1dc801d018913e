"""Visual Turing test: expert raters score blinded, shuffled real and synthetic pairs from 0 to 10.

``synthmed vtt create`` builds a study folder (`synthmed.vtt.study`), ``invite`` makes one token per
rater (`synthmed.vtt.invite`), ``serve`` runs the web app (`synthmed.vtt.app`), and ``analyze``
computes per-rater and pooled statistics with inter-rater agreement (`synthmed.vtt.analyze`).
Scale: 0 = certainly real, 10 = certainly synthetic.
"""
