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
