//! A BERT encoder (inference only) whose variable names match the Hugging
//! Face `BertModel` checkpoints, so that `VarStore::load` reads a
//! `model.safetensors` such as all-MiniLM-L6-v2's as it is, plus the
//! sentence-transformers mean pooling.

use serde::Deserialize;
use tch::{Kind, Tensor, nn};

/// The fields of a Hugging Face `config.json` that shape the model.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub(crate) struct BertConfig {
    /// Token vocabulary size.
    pub vocab_size: i64,
    /// Hidden (and embedding) width.
    pub hidden_size: i64,
    /// Transformer layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    pub num_attention_heads: i64,
    /// Width of the feed-forward layer.
    pub intermediate_size: i64,
    /// Longest input the position embeddings cover.
    pub max_position_embeddings: i64,
    /// Token type (segment) vocabulary size.
    pub type_vocab_size: i64,
    /// Layer-norm epsilon.
    pub layer_norm_eps: f64,
}

fn layer_norm(p: nn::Path, cfg: &BertConfig) -> nn::LayerNorm {
    let c = nn::LayerNormConfig { eps: cfg.layer_norm_eps, ..Default::default() };
    nn::layer_norm(p, vec![cfg.hidden_size], c)
}

#[derive(Debug)]
struct Embeddings {
    word: nn::Embedding,
    position: nn::Embedding,
    token_type: nn::Embedding,
    norm: nn::LayerNorm,
}

#[derive(Debug)]
struct Layer {
    query: nn::Linear,
    key: nn::Linear,
    value: nn::Linear,
    attn_out: nn::Linear,
    attn_norm: nn::LayerNorm,
    intermediate: nn::Linear,
    out: nn::Linear,
    out_norm: nn::LayerNorm,
}

impl Layer {
    fn new(p: nn::Path, cfg: &BertConfig) -> Layer {
        let h = cfg.hidden_size;
        let lin = |p: nn::Path, i, o| nn::linear(p, i, o, Default::default());
        let att = &p / "attention";
        Layer {
            query: lin(&att / "self" / "query", h, h),
            key: lin(&att / "self" / "key", h, h),
            value: lin(&att / "self" / "value", h, h),
            attn_out: lin(&att / "output" / "dense", h, h),
            attn_norm: layer_norm(&att / "output" / "LayerNorm", cfg),
            intermediate: lin(&p / "intermediate" / "dense", h, cfg.intermediate_size),
            out: lin(&p / "output" / "dense", cfg.intermediate_size, h),
            out_norm: layer_norm(&p / "output" / "LayerNorm", cfg),
        }
    }

    /// x: [B, L, H]; bias: [B, 1, 1, L], 0 for tokens and a large negative for padding.
    fn forward(&self, x: &Tensor, bias: &Tensor, heads: i64) -> Tensor {
        let (b, l, h) = x.size3().unwrap_or((0, 0, 0));
        let dh = h / heads;
        let split = |t: Tensor| t.view([b, l, heads, dh]).transpose(1, 2);
        let q = split(x.apply(&self.query));
        let k = split(x.apply(&self.key));
        let v = split(x.apply(&self.value));
        let att = (q.matmul(&k.transpose(-2, -1)) / (dh as f64).sqrt() + bias).softmax(-1, Kind::Float);
        let ctx = att.matmul(&v).transpose(1, 2).contiguous().view([b, l, h]);
        let x = (ctx.apply(&self.attn_out) + x).apply(&self.attn_norm);
        let f = x.apply(&self.intermediate).gelu("none").apply(&self.out);
        (f + x).apply(&self.out_norm)
    }
}

/// The encoder.
#[derive(Debug)]
pub(crate) struct Bert {
    embeddings: Embeddings,
    layers: Vec<Layer>,
    heads: i64,
}

impl Bert {
    /// Create the variables under `p` (named as in Hugging Face checkpoints).
    pub(crate) fn new(p: &nn::Path, cfg: &BertConfig) -> Bert {
        let e = p / "embeddings";
        let h = cfg.hidden_size;
        Bert {
            embeddings: Embeddings {
                word: nn::embedding(&e / "word_embeddings", cfg.vocab_size, h, Default::default()),
                position: nn::embedding(&e / "position_embeddings", cfg.max_position_embeddings, h, Default::default()),
                token_type: nn::embedding(&e / "token_type_embeddings", cfg.type_vocab_size, h, Default::default()),
                norm: layer_norm(&e / "LayerNorm", cfg),
            },
            layers: (0..cfg.num_hidden_layers).map(|i| Layer::new(p / "encoder" / "layer" / i, cfg)).collect(),
            heads: cfg.num_attention_heads,
        }
    }

    /// Token states [B, L, H] for token ids, attention mask (1 = token,
    /// 0 = padding) and token types, each [B, L] of int64.
    pub(crate) fn forward(&self, ids: &Tensor, mask: &Tensor, types: &Tensor) -> Tensor {
        let l = ids.size()[1];
        let positions = Tensor::arange(l, (Kind::Int64, ids.device())).unsqueeze(0);
        let e = &self.embeddings;
        let mut x = (ids.apply(&e.word) + positions.apply(&e.position) + types.apply(&e.token_type)).apply(&e.norm);
        let bias = (mask.to_kind(Kind::Float) - 1.0).unsqueeze(1).unsqueeze(1) * 1e9;
        for layer in &self.layers {
            x = layer.forward(&x, &bias, self.heads);
        }
        x
    }

    /// Sentence embeddings [B, H]: the mean of the token states over real
    /// tokens (padding masked out), L2-normalised.
    pub(crate) fn embed(&self, ids: &Tensor, mask: &Tensor, types: &Tensor) -> Tensor {
        let states = self.forward(ids, mask, types);
        let m = mask.to_kind(Kind::Float).unsqueeze(-1);
        let summed = (states * &m).sum_dim_intlist(1, false, Kind::Float);
        let counts = m.sum_dim_intlist(1, false, Kind::Float).clamp_min(1.0);
        let mean = summed / counts;
        let norm = mean.norm_scalaropt_dim(2, [1], true).clamp_min(1e-12);
        mean / norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tiny() -> (nn::VarStore, Bert) {
        tch::manual_seed(1);
        let cfg = BertConfig {
            vocab_size: 20,
            hidden_size: 8,
            num_hidden_layers: 2,
            num_attention_heads: 2,
            intermediate_size: 16,
            max_position_embeddings: 10,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
        };
        let vs = nn::VarStore::new(tch::Device::Cpu);
        let m = Bert::new(&vs.root(), &cfg);
        (vs, m)
    }

    #[test]
    fn variables_carry_hugging_face_names() {
        let _rng = crate::device::rng_lock();
        let (vs, _) = tiny();
        let names = vs.variables();
        for n in [
            "embeddings.word_embeddings.weight",
            "embeddings.LayerNorm.bias",
            "encoder.layer.1.attention.self.value.weight",
            "encoder.layer.0.attention.output.LayerNorm.weight",
            "encoder.layer.1.intermediate.dense.bias",
            "encoder.layer.1.output.dense.weight",
        ] {
            assert!(names.contains_key(n), "missing {n}");
        }
    }

    #[test]
    fn padding_does_not_change_embeddings() {
        let _rng = crate::device::rng_lock();
        let (_vs, m) = tiny();
        let ids = Tensor::from_slice(&[2i64, 5, 7, 3]).view([1, 4]);
        let one = Tensor::ones([1, 4], (Kind::Int64, tch::Device::Cpu));
        let a = m.embed(&ids, &one, &one.zeros_like());
        let padded = Tensor::from_slice(&[2i64, 5, 7, 3, 0, 0]).view([1, 6]);
        let mask = Tensor::from_slice(&[1i64, 1, 1, 1, 0, 0]).view([1, 6]);
        let b = m.embed(&padded, &mask, &mask.zeros_like());
        let diff = (a - &b).abs().max().double_value(&[]);
        assert!(diff < 1e-5, "padding changed the embedding by {diff}");
        let norm = b.norm().double_value(&[]);
        assert!((norm - 1.0).abs() < 1e-5, "not unit length: {norm}");
    }
}
