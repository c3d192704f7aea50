"""Run the exported graphs through onnxruntime the way the Rust runtime will, and
compare with the PyTorch references."""
import numpy as np
import onnxruntime as ort


class Runtime:
    def __init__(self, out_dir, manifest, providers):
        import os
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        self.m = manifest
        self.np_dtype = np.float16 if manifest["dtype"] == "float16" else np.float32

        def sess(f):
            return ort.InferenceSession(os.path.join(out_dir, f), opts, providers=providers)

        self.vision = sess(manifest["vision"]["file"])
        self.embed = sess(manifest["embed"]["file"])
        self.decoder = sess(manifest["decoder"]["file"])
        self.value_head = sess(manifest["value_head"]["file"]) if manifest["value_head"] else None
        self.dec_outputs = [o.name for o in self.decoder.get_outputs()]

    def image_features(self, pixel_values):
        v = self.m["vision"]
        return self.vision.run([v["output"]], {v["input"]: pixel_values.astype(self.np_dtype)})[0]

    def embeds(self, ids):
        e = self.m["embed"]
        return self.embed.run([e["output"]], {e["input"]: np.asarray(ids, dtype=np.int64)})[0]

    def spliced(self, ids, feats):
        """Embeddings of `ids` ([seq]) with the single image token replaced by `feats`."""
        img = self.m["special_tokens"]["image"]
        pos = ids.index(img)
        emb = self.embeds([ids])[0]
        return np.concatenate([emb[:pos], feats, emb[pos + 1:]], axis=0)

    def empty_past(self, batch):
        d = self.m["decoder"]
        shape = (batch, d["num_kv_heads"], 0, d["head_dim"])
        return [np.zeros(shape, self.np_dtype) for _ in range(2 * d["num_layers"])]

    def step(self, embeds, mask, positions, past):
        """One decoder call; returns (dict of named outputs, presents list)."""
        d = self.m["decoder"]
        feed = {d["inputs_embeds"]: embeds.astype(self.np_dtype),
                d["attention_mask"]: np.asarray(mask, dtype=np.int64)}
        if d["position_ids"]:
            feed[d["position_ids"]] = np.asarray(positions, dtype=np.int64)
        for i in range(d["num_layers"]):
            feed[d["past_key"].format(i=i)] = past[2 * i]
            feed[d["past_value"].format(i=i)] = past[2 * i + 1]
        outs = dict(zip(self.dec_outputs, self.decoder.run(self.dec_outputs, feed)))
        presents = []
        for i in range(d["num_layers"]):
            presents += [outs[d["present_key"].format(i=i)], outs[d["present_value"].format(i=i)]]
        return outs, presents

    def greedy(self, embeds, steps):
        """Batch-1 greedy decoding from spliced prompt embeddings [seq, hidden]."""
        d = self.m["decoder"]
        n = embeds.shape[0]
        outs, past = self.step(embeds[None], np.ones((1, n)), np.arange(n)[None], self.empty_past(1))
        new, logits = [], []
        for k in range(steps):
            last = outs[d["logits"]][0, -1].astype(np.float32)
            logits.append(last)
            nxt = int(last.argmax())
            new.append(nxt)
            if k == steps - 1:
                break
            e = self.embeds([[nxt]])
            total = n + k + 1
            outs, past = self.step(e, np.ones((1, total)), [[total - 1]], past)
        return new, logits

    def value(self, embeds_list, pad_side="right"):
        """Values of several spliced sequences, batched with padding on `pad_side`."""
        d = self.m["decoder"]
        lens = [e.shape[0] for e in embeds_list]
        n = max(lens)
        b = len(embeds_list)
        h = embeds_list[0].shape[1]
        x = np.zeros((b, n, h), self.np_dtype)
        mask = np.zeros((b, n), np.int64)
        pos = np.zeros((b, n), np.int64)
        last = []
        for r, e in enumerate(embeds_list):
            L = e.shape[0]
            if pad_side == "right":
                x[r, :L] = e
                mask[r, :L] = 1
                pos[r, :L] = np.arange(L)
                last.append(L - 1)
            else:
                x[r, n - L:] = e
                mask[r, n - L:] = 1
                pos[r, n - L:] = np.arange(L)
                last.append(n - 1)
        outs, _ = self.step(x, mask, pos, self.empty_past(b))
        hs = outs[d["hidden_states"]]
        sel = np.stack([hs[r, last[r]] for r in range(b)])
        vh = self.m["value_head"]
        return self.value_head.run([vh["output"]], {vh["input"]: sel})[0], outs, last

    def padded_decode(self, embeds_list, next_ids, pad_side, steps=3):
        """Prefill a padded batch, then `steps` decode steps per row feeding next_ids[r][k]
        (the mask grows by one column of ones per step); returns (last-real-token prefill
        logits per row, [decode-step logits per row] per step)."""
        d = self.m["decoder"]
        lens = [e.shape[0] for e in embeds_list]
        n = max(lens)
        b = len(embeds_list)
        h = embeds_list[0].shape[1]
        x = np.zeros((b, n, h), self.np_dtype)
        mask = np.zeros((b, n), np.int64)
        pos = np.zeros((b, n), np.int64)
        for r, e in enumerate(embeds_list):
            L = e.shape[0]
            sl = slice(0, L) if pad_side == "right" else slice(n - L, n)
            x[r, sl] = e
            mask[r, sl] = 1
            pos[r, sl] = np.arange(L)
        outs, past = self.step(x, mask, pos, self.empty_past(b))
        lg = outs[d["logits"]]
        pre = [lg[r, (lens[r] - 1) if pad_side == "right" else n - 1] for r in range(b)]
        dec = []
        for k in range(steps):
            e = self.embeds([[next_ids[r][k]] for r in range(b)])
            mask = np.concatenate([mask, np.ones((b, 1), np.int64)], axis=1)
            pos2 = np.array([[L + k] for L in lens])
            outs, past = self.step(e, mask, pos2, past)
            dec.append([outs[d["logits"]][r, 0] for r in range(b)])
        return pre, dec

    def alone_decode(self, e, next_ids):
        """The same for one row without padding."""
        d = self.m["decoder"]
        n = e.shape[0]
        outs, past = self.step(e[None], np.ones((1, n)), np.arange(n)[None], self.empty_past(1))
        pre = outs[d["logits"]][0, -1]
        dec = []
        for k, i in enumerate(next_ids):
            outs, past = self.step(self.embeds([[i]]), np.ones((1, n + k + 1)), [[n + k]], past)
            dec.append(outs[d["logits"]][0, 0])
        return pre, dec
