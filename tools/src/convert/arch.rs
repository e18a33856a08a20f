//! torchvision's architectures, module by module as torchvision's code builds
//! them (eval mode: dropout is the identity and left out).

use anyhow::Result;

use super::Tap;
use super::graph::{Conv, Graph};

fn conv(cin: usize, cout: usize, kernel: usize, stride: usize) -> Conv {
    Conv {
        cin,
        cout,
        kernel,
        stride,
        groups: 1,
        bias: false,
        pad: None,
    }
}

/// conv → BatchNorm (no activation).
fn conv_bn(g: &mut Graph, conv_m: &str, bn_m: &str, x: &str, c: Conv) -> Result<String> {
    let cout = c.cout;
    let x = g.conv(conv_m, x, c)?;
    g.batch_norm(bn_m, &x, cout)
}

fn tap(name: &str, tensor: &str, stride: u32) -> Tap {
    Tap {
        name: name.into(),
        tensor: tensor.into(),
        stride,
    }
}

/// torchvision `resnet18/34` (BasicBlock) and `resnet50` (Bottleneck, stride on
/// the 3×3 convolution, "ResNet v1.5").
pub fn resnet(g: &mut Graph, blocks: [usize; 4], bottleneck: bool) -> Result<(String, Vec<Tap>)> {
    let expansion = if bottleneck { 4 } else { 1 };
    let x = conv_bn(g, "conv1", "bn1", "input", conv(3, 64, 7, 2))?;
    let x = g.relu("relu", 0, &x);
    let mut x = g.max_pool("maxpool", &x);
    let mut taps = vec![tap("stem", &x, 4)];
    let mut inplanes = 64;
    for (layer, (&n, planes)) in blocks.iter().zip([64, 128, 256, 512]).enumerate() {
        for b in 0..n {
            let stride = if layer > 0 && b == 0 { 2 } else { 1 };
            let m = format!("layer{}.{b}", layer + 1);
            let out = planes * expansion;
            let mut y = x.clone();
            let last = if bottleneck {
                y = conv_bn(
                    g,
                    &format!("{m}.conv1"),
                    &format!("{m}.bn1"),
                    &y,
                    conv(inplanes, planes, 1, 1),
                )?;
                y = g.relu(&format!("{m}.relu"), 0, &y);
                y = conv_bn(
                    g,
                    &format!("{m}.conv2"),
                    &format!("{m}.bn2"),
                    &y,
                    conv(planes, planes, 3, stride),
                )?;
                y = g.relu(&format!("{m}.relu"), 1, &y);
                y = conv_bn(
                    g,
                    &format!("{m}.conv3"),
                    &format!("{m}.bn3"),
                    &y,
                    conv(planes, out, 1, 1),
                )?;
                2
            } else {
                y = conv_bn(
                    g,
                    &format!("{m}.conv1"),
                    &format!("{m}.bn1"),
                    &y,
                    conv(inplanes, planes, 3, stride),
                )?;
                y = g.relu(&format!("{m}.relu"), 0, &y);
                y = conv_bn(
                    g,
                    &format!("{m}.conv2"),
                    &format!("{m}.bn2"),
                    &y,
                    conv(planes, planes, 3, 1),
                )?;
                1
            };
            let identity = if stride != 1 || inplanes != out {
                conv_bn(
                    g,
                    &format!("{m}.downsample.0"),
                    &format!("{m}.downsample.1"),
                    &x,
                    conv(inplanes, out, 1, stride),
                )?
            } else {
                x.clone()
            };
            let sum = g.add(&m, &y, &identity);
            x = g.relu(&format!("{m}.relu"), last, &sum);
            inplanes = out;
        }
        taps.push(tap(&format!("layer{}", layer + 1), &x, 4 << layer));
    }
    let logits = g.head("avgpool", "fc", &x, 512 * expansion)?;
    Ok((logits, taps))
}

/// torchvision `mobilenet_v2` (width 1.0): ReLU6 as Clip, residual adds where
/// stride 1 keeps the channels.
pub fn mobilenet_v2(g: &mut Graph) -> Result<(String, Vec<Tap>)> {
    // t (expansion), c (channels), n (blocks), s (first block's stride)
    const SETTINGS: [(usize, usize, usize, usize); 7] = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    let mut x = conv_bn_relu6(g, "features.0", "input", conv(3, 32, 3, 2))?;
    let mut taps = Vec::new();
    let mut stride_so_far: u32 = 2;
    let mut cin = 32;
    let mut index = 1;
    for (t, c, n, s) in SETTINGS {
        for b in 0..n {
            let stride = if b == 0 { s } else { 1 };
            let m = format!("features.{index}");
            let hidden = cin * t;
            let mut y = x.clone();
            let mut part = 0;
            if t != 1 {
                y = conv_bn_relu6(g, &format!("{m}.conv.0"), &y, conv(cin, hidden, 1, 1))?;
                part = 1;
            }
            y = conv_bn_relu6(
                g,
                &format!("{m}.conv.{part}"),
                &y,
                Conv {
                    groups: hidden,
                    ..conv(hidden, hidden, 3, stride)
                },
            )?;
            y = conv_bn(
                g,
                &format!("{m}.conv.{}", part + 1),
                &format!("{m}.conv.{}", part + 2),
                &y,
                conv(hidden, c, 1, 1),
            )?;
            x = if stride == 1 && cin == c {
                g.add(&m, &x, &y)
            } else {
                y
            };
            cin = c;
            stride_so_far *= stride as u32;
            index += 1;
        }
        // The last block before each stride change, as the shipped manifest.
        if matches!(c, 24 | 32 | 96) {
            taps.push(tap(&format!("features.{}", index - 1), &x, stride_so_far));
        }
    }
    x = conv_bn_relu6(g, "features.18", &x, conv(320, 1280, 1, 1))?;
    taps.push(tap("features.18", &x, 32));
    let logits = g.head("", "classifier.1", &x, 1280)?;
    Ok((logits, taps))
}

/// torchvision's Conv2dNormActivation with ReLU6: `m.0` conv, `m.1` BN, `m.2` ReLU6.
fn conv_bn_relu6(g: &mut Graph, m: &str, x: &str, c: Conv) -> Result<String> {
    let y = conv_bn(g, &format!("{m}.0"), &format!("{m}.1"), x, c)?;
    Ok(g.relu6(&format!("{m}.2"), &y))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Act {
    Relu,
    HardSwish,
    Silu,
}

fn activate(g: &mut Graph, m: &str, x: &str, act: Act) -> String {
    match act {
        Act::Relu => g.relu(m, 0, x),
        Act::HardSwish => g.hard_swish(m, x),
        Act::Silu => g.silu(m, x),
    }
}

/// torchvision's Conv2dNormActivation: `m.0` conv, `m.1` BN, `m.2` activation.
fn conv_norm_act(g: &mut Graph, m: &str, x: &str, c: Conv, act: Option<Act>) -> Result<String> {
    let y = conv_bn(g, &format!("{m}.0"), &format!("{m}.1"), x, c)?;
    Ok(match act {
        Some(act) => activate(g, &format!("{m}.2"), &y, act),
        None => y,
    })
}

/// torchvision's SqueezeExcitation: pool, `fc1`, activation, `fc2`, gate, scale.
fn squeeze_excite(
    g: &mut Graph,
    m: &str,
    x: &str,
    channels: usize,
    squeeze: usize,
    act: Act,
    hard_gate: bool,
) -> Result<String> {
    let fc = |cin, cout| Conv {
        bias: true,
        ..conv(cin, cout, 1, 1)
    };
    let s = g.global_avg_pool(&format!("{m}.avgpool"), x);
    let s = g.conv(&format!("{m}.fc1"), &s, fc(channels, squeeze))?;
    let s = activate(g, &format!("{m}.activation"), &s, act);
    let s = g.conv(&format!("{m}.fc2"), &s, fc(squeeze, channels))?;
    let s = if hard_gate {
        g.hard_sigmoid(&format!("{m}.scale_activation"), &s)
    } else {
        g.sigmoid(&format!("{m}.scale_activation"), &s)
    };
    Ok(g.mul(m, &s, x))
}

/// torchvision's `_make_divisible(v, 8)`.
fn make_divisible(v: usize) -> usize {
    let new = 8.max((v + 4) / 8 * 8);
    if (new as f64) < 0.9 * v as f64 {
        new + 8
    } else {
        new
    }
}

/// The last output at each stride from 4 on, as torchvision's feature
/// extractors take them: `outputs` are (module, tensor, stride) in order.
pub(super) fn stride_taps(outputs: &[(String, String, u32)]) -> Vec<Tap> {
    let mut taps: Vec<Tap> = Vec::new();
    for (i, (name, tensor, stride)) in outputs.iter().enumerate() {
        let last_at_stride = outputs.get(i + 1).is_none_or(|next| next.2 != *stride);
        if *stride >= 4 && last_at_stride {
            taps.push(tap(name, tensor, *stride));
        }
    }
    taps
}

/// torchvision `mobilenet_v3_large` / `mobilenet_v3_small` (BatchNorm eps 1e-3).
pub fn mobilenet_v3(g: &mut Graph, large: bool) -> Result<(String, Vec<Tap>)> {
    use Act::{HardSwish as HS, Relu as RE};
    // input, kernel, expanded, out, squeeze-excite, activation, stride
    type Block = (usize, usize, usize, usize, bool, Act, usize);
    const LARGE: [Block; 15] = [
        (16, 3, 16, 16, false, RE, 1),
        (16, 3, 64, 24, false, RE, 2),
        (24, 3, 72, 24, false, RE, 1),
        (24, 5, 72, 40, true, RE, 2),
        (40, 5, 120, 40, true, RE, 1),
        (40, 5, 120, 40, true, RE, 1),
        (40, 3, 240, 80, false, HS, 2),
        (80, 3, 200, 80, false, HS, 1),
        (80, 3, 184, 80, false, HS, 1),
        (80, 3, 184, 80, false, HS, 1),
        (80, 3, 480, 112, true, HS, 1),
        (112, 3, 672, 112, true, HS, 1),
        (112, 5, 672, 160, true, HS, 2),
        (160, 5, 960, 160, true, HS, 1),
        (160, 5, 960, 160, true, HS, 1),
    ];
    const SMALL: [Block; 11] = [
        (16, 3, 16, 16, true, RE, 2),
        (16, 3, 72, 24, false, RE, 2),
        (24, 3, 88, 24, false, RE, 1),
        (24, 5, 96, 40, true, HS, 2),
        (40, 5, 240, 40, true, HS, 1),
        (40, 5, 240, 40, true, HS, 1),
        (40, 5, 120, 48, true, HS, 1),
        (48, 5, 144, 48, true, HS, 1),
        (48, 5, 288, 96, true, HS, 2),
        (96, 5, 576, 96, true, HS, 1),
        (96, 5, 576, 96, true, HS, 1),
    ];
    let (blocks, last_channel): (&[Block], usize) = if large {
        (&LARGE, 1280)
    } else {
        (&SMALL, 1024)
    };
    g.bn_eps = 1e-3;
    let mut stride: u32 = 2;
    let mut x = conv_norm_act(g, "features.0", "input", conv(3, 16, 3, 2), Some(HS))?;
    let mut outputs = vec![("features.0".to_string(), x.clone(), stride)];
    for (i, &(cin, k, expanded, cout, se, act, s)) in blocks.iter().enumerate() {
        let m = format!("features.{}", i + 1);
        let mut y = x.clone();
        let mut j = 0;
        if expanded != cin {
            y = conv_norm_act(
                g,
                &format!("{m}.block.0"),
                &y,
                conv(cin, expanded, 1, 1),
                Some(act),
            )?;
            j += 1;
        }
        let dw = Conv {
            groups: expanded,
            ..conv(expanded, expanded, k, s)
        };
        y = conv_norm_act(g, &format!("{m}.block.{j}"), &y, dw, Some(act))?;
        j += 1;
        if se {
            let squeeze = make_divisible(expanded / 4);
            y = squeeze_excite(
                g,
                &format!("{m}.block.{j}"),
                &y,
                expanded,
                squeeze,
                Act::Relu,
                true,
            )?;
            j += 1;
        }
        y = conv_norm_act(
            g,
            &format!("{m}.block.{j}"),
            &y,
            conv(expanded, cout, 1, 1),
            None,
        )?;
        x = if s == 1 && cin == cout {
            g.add(&m, &y, &x)
        } else {
            y
        };
        stride *= s as u32;
        outputs.push((m, x.clone(), stride));
    }
    let cin = blocks[blocks.len() - 1].3;
    let m = format!("features.{}", blocks.len() + 1);
    x = conv_norm_act(g, &m, &x, conv(cin, cin * 6, 1, 1), Some(HS))?;
    outputs.push((m, x.clone(), stride));
    let y = g.pool_flatten("avgpool", &x);
    let y = g.linear("classifier.0", &y, cin * 6, Some(last_channel))?;
    let y = g.hard_swish("classifier.1", &y);
    let logits = g.linear("classifier.3", &y, last_channel, None)?;
    Ok((logits, stride_taps(&outputs)))
}

/// torchvision `efficientnet_b0`: MBConv stages with SiLU and squeeze-excite
/// (stochastic depth is the identity in eval mode).
pub fn efficientnet_b0(g: &mut Graph) -> Result<(String, Vec<Tap>)> {
    // expand ratio, kernel, stride, input, output, blocks
    const STAGES: [(usize, usize, usize, usize, usize, usize); 7] = [
        (1, 3, 1, 32, 16, 1),
        (6, 3, 2, 16, 24, 2),
        (6, 5, 2, 24, 40, 2),
        (6, 3, 2, 40, 80, 3),
        (6, 5, 1, 80, 112, 3),
        (6, 5, 2, 112, 192, 4),
        (6, 3, 1, 192, 320, 1),
    ];
    let mut stride: u32 = 2;
    let mut x = conv_norm_act(g, "features.0", "input", conv(3, 32, 3, 2), Some(Act::Silu))?;
    let mut outputs = vec![("features.0".to_string(), x.clone(), stride)];
    for (stage, &(t, k, s, first_in, cout, n)) in STAGES.iter().enumerate() {
        let stage = format!("features.{}", stage + 1);
        for b in 0..n {
            let (cin, s) = if b == 0 { (first_in, s) } else { (cout, 1) };
            let m = format!("{stage}.{b}");
            let expanded = cin * t;
            let mut y = x.clone();
            let mut j = 0;
            if expanded != cin {
                y = conv_norm_act(
                    g,
                    &format!("{m}.block.0"),
                    &y,
                    conv(cin, expanded, 1, 1),
                    Some(Act::Silu),
                )?;
                j += 1;
            }
            let dw = Conv {
                groups: expanded,
                ..conv(expanded, expanded, k, s)
            };
            y = conv_norm_act(g, &format!("{m}.block.{j}"), &y, dw, Some(Act::Silu))?;
            let squeeze = (cin / 4).max(1);
            y = squeeze_excite(
                g,
                &format!("{m}.block.{}", j + 1),
                &y,
                expanded,
                squeeze,
                Act::Silu,
                false,
            )?;
            y = conv_norm_act(
                g,
                &format!("{m}.block.{}", j + 2),
                &y,
                conv(expanded, cout, 1, 1),
                None,
            )?;
            x = if s == 1 && cin == cout {
                g.add(&m, &y, &x)
            } else {
                y
            };
            stride *= s as u32;
        }
        outputs.push((stage, x.clone(), stride));
    }
    x = conv_norm_act(g, "features.8", &x, conv(320, 1280, 1, 1), Some(Act::Silu))?;
    outputs.push(("features.8".into(), x.clone(), stride));
    let logits = g.head("avgpool", "classifier.1", &x, 1280)?;
    Ok((logits, stride_taps(&outputs)))
}

/// torchvision `densenet121`: growth 32, bottleneck 4×, blocks of 6, 12, 24, 16
/// layers, each layer reading the concatenation of all before it.
pub fn densenet121(g: &mut Graph) -> Result<(String, Vec<Tap>)> {
    const GROWTH: usize = 32;
    let x = conv_bn(
        g,
        "features.conv0",
        "features.norm0",
        "input",
        conv(3, 64, 7, 2),
    )?;
    let x = g.relu("features.relu0", 0, &x);
    let mut x = g.max_pool("features.pool0", &x);
    let mut channels = 64;
    let mut taps = Vec::new();
    for (i, n) in [6, 12, 24, 16].into_iter().enumerate() {
        let block = format!("features.denseblock{}", i + 1);
        let mut features = vec![x.clone()];
        for l in 0..n {
            let m = format!("{block}.denselayer{}", l + 1);
            let cin = channels + l * GROWTH;
            let input = if features.len() == 1 {
                features[0].clone()
            } else {
                g.concat(&m, &features)
            };
            let y = g.batch_norm(&format!("{m}.norm1"), &input, cin)?;
            let y = g.relu(&format!("{m}.relu1"), 0, &y);
            let y = g.conv(&format!("{m}.conv1"), &y, conv(cin, 4 * GROWTH, 1, 1))?;
            let y = g.batch_norm(&format!("{m}.norm2"), &y, 4 * GROWTH)?;
            let y = g.relu(&format!("{m}.relu2"), 0, &y);
            let y = g.conv(&format!("{m}.conv2"), &y, conv(4 * GROWTH, GROWTH, 3, 1))?;
            features.push(y);
        }
        x = g.concat(&block, &features);
        channels += n * GROWTH;
        if i < 3 {
            taps.push(tap(&block, &x, 4 << i));
            let m = format!("features.transition{}", i + 1);
            let y = g.batch_norm(&format!("{m}.norm"), &x, channels)?;
            let y = g.relu(&format!("{m}.relu"), 0, &y);
            let y = g.conv(&format!("{m}.conv"), &y, conv(channels, channels / 2, 1, 1))?;
            x = g.avg_pool2(&format!("{m}.pool"), &y);
            channels /= 2;
        }
    }
    let x = g.batch_norm("features.norm5", &x, channels)?;
    // torchvision applies `F.relu(features, inplace=True)` to norm5's output, so
    // what PyTorch hands a user as `features.norm5` (a hook, the returned tensor)
    // is the rectified map: the tap reads after the ReLU.
    let y = g.relu("", 0, &x);
    taps.push(tap("features.norm5", &y, 32));
    let logits = g.head("", "classifier", &y, channels)?;
    Ok((logits, taps))
}

/// torchvision `vgg16` (configuration D, no BatchNorm). Its AdaptiveAvgPool2d
/// to 7×7 is the identity at the 224×224 input the manifest sets and is left
/// out, so the classifier needs that size (the taps work at any multiple of 32).
pub fn vgg16(g: &mut Graph) -> Result<(String, Vec<Tap>)> {
    const CFG: [usize; 18] = [
        64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0,
    ];
    let mut x = "input".to_string();
    let mut cin = 3;
    let mut stride: u32 = 1;
    let mut index = 0;
    let mut outputs = Vec::new();
    for v in CFG {
        if v == 0 {
            x = g.max_pool2(&format!("features.{index}"), &x);
            stride *= 2;
            index += 1;
        } else {
            let c = Conv {
                bias: true,
                ..conv(cin, v, 3, 1)
            };
            x = g.conv(&format!("features.{index}"), &x, c)?;
            x = g.relu(&format!("features.{}", index + 1), 0, &x);
            cin = v;
            index += 2;
        }
        outputs.push((format!("features.{}", index - 1), x.clone(), stride));
    }
    let y = g.flatten(&x);
    let y = g.linear("classifier.0", &y, 512 * 7 * 7, Some(4096))?;
    let y = g.relu("classifier.1", 0, &y);
    let y = g.linear("classifier.3", &y, 4096, Some(4096))?;
    let y = g.relu("classifier.4", 0, &y);
    let logits = g.linear("classifier.6", &y, 4096, None)?;
    Ok((logits, stride_taps(&outputs)))
}
