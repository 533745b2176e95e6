"""MIDI files, the tokenizer and its one decoder, the encoder, augmentation, fingerprints."""
