//! Rasterises a scene into an RGB buffer: analytic signed distances, one sample per
//! pixel, coverage from the distance for a one-pixel antialiased edge.
//!
//! Vertex tables are literal constants rather than `sin`/`cos` calls so the pixels
//! cannot depend on a platform's libm; everything else is IEEE-exact arithmetic.
use super::scene::{Object, Scene, Shape};

/// Light grey, slightly warm, so white-ish yellow shapes still stand out.
pub const BACKGROUND: [u8; 3] = [246, 245, 240];

/// Unit equilateral triangle pointing up (y grows downwards), centroid at the origin.
const TRIANGLE: [(f32, f32); 3] = [(0.0, -1.0), (0.866_025_4, 0.5), (-0.866_025_4, 0.5)];

/// Star tips at -90 + 72k degrees, inner corners half-way between them.
const STAR_OUTER: [(f32, f32); 5] = [
    (0.0, -1.0),
    (0.951_056_5, -0.309_017),
    (0.587_785_2, 0.809_017),
    (-0.587_785_2, 0.809_017),
    (-0.951_056_5, -0.309_017),
];
const STAR_INNER: [(f32, f32); 5] = [
    (0.587_785_2, -0.809_017),
    (0.951_056_5, 0.309_017),
    (0.0, 1.0),
    (-0.951_056_5, 0.309_017),
    (-0.587_785_2, -0.809_017),
];
const STAR_INNER_RATIO: f32 = 0.5;

/// Scale factors that give the shapes similar visual weight at one nominal radius.
const SQUARE_HALF: f32 = 0.85;
const DIAMOND_HALF: f32 = 1.1;
const TRIANGLE_SCALE: f32 = 1.15;
const STAR_SCALE: f32 = 1.1;

enum Outline {
    Circle {
        cx: f32,
        cy: f32,
        r: f32,
    },
    /// A closed polygon, convex or not (the star is not).
    Polygon(Vec<(f32, f32)>),
}

impl Outline {
    /// The outline, how far it reaches from the centre, and a radius within which
    /// it surely covers every pixel (only a speed-up: pixels there skip the
    /// distance computation).
    fn of(o: &Object) -> (Outline, f32, f32) {
        let (cx, cy, r) = (o.x as f32, o.y as f32, o.radius as f32);
        let place = |pts: &[(f32, f32)], scale: f32, dy: f32| -> Vec<(f32, f32)> {
            pts.iter()
                .map(|&(x, y)| (cx + x * r * scale, cy + (y + dy) * r * scale))
                .collect()
        };
        match o.shape {
            Shape::Circle => (Outline::Circle { cx, cy, r }, r, 0.0),
            Shape::Square => {
                let h = SQUARE_HALF;
                let sq = [(-h, -h), (h, -h), (h, h), (-h, h)];
                (Outline::Polygon(place(&sq, 1.0, 0.0)), r * h * 1.5, r * 0.8)
            }
            Shape::Diamond => {
                let h = DIAMOND_HALF;
                let d = [(0.0, -h), (h, 0.0), (0.0, h), (-h, 0.0)];
                (Outline::Polygon(place(&d, 1.0, 0.0)), r * h, r * 0.75)
            }
            Shape::Triangle => {
                // Shifted down by a quarter so the bounding box, not the centroid, is
                // centred: the triangle then looks centred in its cell.
                let tri = place(&TRIANGLE, TRIANGLE_SCALE, 0.25);
                (Outline::Polygon(tri), r * TRIANGLE_SCALE * 1.25, r * 0.4)
            }
            Shape::Star => {
                let ir = STAR_INNER_RATIO;
                let pts: Vec<(f32, f32)> = (0..5)
                    .flat_map(|k| {
                        let (ix, iy) = STAR_INNER[k];
                        [STAR_OUTER[k], (ix * ir, iy * ir)]
                    })
                    .collect();
                (
                    Outline::Polygon(place(&pts, STAR_SCALE, 0.0)),
                    r * STAR_SCALE,
                    r * 0.4,
                )
            }
        }
    }

    /// Exact signed distance, negative inside. (A union of convex pieces would be
    /// cheaper but leaves half-covered seams along the internal edges.)
    fn distance(&self, x: f32, y: f32) -> f32 {
        match self {
            Outline::Circle { cx, cy, r } => ((x - cx).powi(2) + (y - cy).powi(2)).sqrt() - r,
            Outline::Polygon(pts) => {
                let mut nearest = f32::INFINITY;
                let mut inside = false;
                for (i, &(ax, ay)) in pts.iter().enumerate() {
                    let (bx, by) = pts[(i + 1) % pts.len()];
                    let (px, py, ex, ey) = (x - ax, y - ay, bx - ax, by - ay);
                    let len2 = ex * ex + ey * ey;
                    let t = if len2 > 0.0 {
                        ((px * ex + py * ey) / len2).clamp(0.0, 1.0)
                    } else {
                        0.0
                    };
                    let (dx, dy) = (px - ex * t, py - ey * t);
                    nearest = nearest.min(dx * dx + dy * dy);
                    // Even-odd crossing test on a ray towards +x.
                    if (ay > y) != (by > y) && x < ax + (y - ay) * ex / ey {
                        inside = !inside;
                    }
                }
                let d = nearest.sqrt();
                if inside {
                    -d
                } else {
                    d
                }
            }
        }
    }
}

/// The scene as packed RGB8, `canvas * canvas * 3` bytes.
pub fn render(scene: &Scene) -> Vec<u8> {
    let side = scene.canvas as usize;
    let mut buf = BACKGROUND.repeat(side * side);
    for o in &scene.objects {
        paint(&mut buf, side, o);
    }
    buf
}

fn paint(buf: &mut [u8], side: usize, o: &Object) {
    let (outline, extent, solid) = Outline::of(o);
    // Squared radii, minus a pixel of margin for the antialiased edge.
    let solid2 = (solid - 1.0).max(0.0).powi(2);
    let reach2 = (extent + 1.0).powi(2);
    let (fx, fy) = (o.x as f32, o.y as f32);
    let colour = o.colour.rgb();
    let reach = extent.ceil() as i32 + 2;
    let clamp = |v: i32| v.clamp(0, side as i32) as usize;
    let (x0, x1) = (clamp(o.x - reach), clamp(o.x + reach + 1));
    let (y0, y1) = (clamp(o.y - reach), clamp(o.y + reach + 1));
    for py in y0..y1 {
        let row = py * side;
        for px in x0..x1 {
            let (x, y) = (px as f32 + 0.5, py as f32 + 0.5);
            let r2 = (x - fx).powi(2) + (y - fy).powi(2);
            let cover = if r2 > reach2 {
                0.0
            } else if r2 < solid2 {
                1.0
            } else {
                (0.5 - outline.distance(x, y)).clamp(0.0, 1.0)
            };
            if cover <= 0.0 {
                continue;
            }
            let i = (row + px) * 3;
            for (k, &c) in colour.iter().enumerate() {
                let old = buf[i + k] as f32;
                buf[i + k] = (old + (c as f32 - old) * cover).round() as u8;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synth::scene::{Colour, Size};

    fn one(shape: Shape) -> Scene {
        Scene {
            canvas: 64,
            grid: 1,
            objects: vec![Object {
                shape,
                colour: Colour::Blue,
                size: Size::Large,
                row: 0,
                col: 0,
                x: 32,
                y: 32,
                radius: 20,
            }],
        }
    }

    fn pixel(buf: &[u8], x: usize, y: usize) -> [u8; 3] {
        let i = (y * 64 + x) * 3;
        [buf[i], buf[i + 1], buf[i + 2]]
    }

    #[test]
    fn shapes_fill_their_centre_and_leave_corners() {
        for shape in Shape::ALL {
            let buf = render(&one(shape));
            assert_eq!(pixel(&buf, 32, 32), Colour::Blue.rgb(), "{shape:?} centre");
            assert_eq!(pixel(&buf, 1, 1), BACKGROUND, "{shape:?} corner");
        }
    }

    #[test]
    fn shapes_differ_from_each_other() {
        let imgs: Vec<Vec<u8>> = Shape::ALL.iter().map(|&s| render(&one(s))).collect();
        for i in 0..imgs.len() {
            for j in i + 1..imgs.len() {
                assert_ne!(imgs[i], imgs[j]);
            }
        }
    }

    #[test]
    fn star_has_notches_between_tips() {
        let buf = render(&one(Shape::Star));
        // Straight up is a tip; straight down is an inner corner at half radius,
        // so a point 3/4 of the way down is background.
        assert_eq!(pixel(&buf, 32, 32 - 19), Colour::Blue.rgb());
        assert_eq!(pixel(&buf, 32, 32 + 17), BACKGROUND);
    }
}
