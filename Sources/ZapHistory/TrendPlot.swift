import Foundation

/// One metric over the runs of a history, split into series by a label: CSV, and a
/// self-contained HTML page with an SVG line chart (no script, no network).
public struct Trend: Sendable {
    /// One point: a run and its value.
    public struct Point: Sendable, Equatable {
        public var run: Int64
        public var startedAt: String
        public var value: Double
    }

    /// The metric.
    public var metric: String
    /// The label that splits the series, if any.
    public var label: String?
    /// The series, by label value ("" without a label, "(none)" for runs without that label).
    public var series: [String: [Point]]

    /// The trend of `metric` over every run of `database`.
    public static func of(_ metric: String, by label: String?, in database: HistoryDatabase) throws(HistoryError) -> Trend {
        let values = try database.values(of: metric)
        var series: [String: [Point]] = [:]
        for run in try database.runs() {
            guard let value = values[run.id] else { continue }
            let key = label.map { run.labels[$0] ?? "(none)" } ?? ""
            series[key, default: []].append(Point(run: run.id, startedAt: run.startedAt, value: value))
        }
        return Trend(metric: metric, label: label, series: series)
    }

    /// `run,started_at,series,value`, a line per point, oldest first.
    public var csv: String {
        var lines = ["run,started_at,\(label ?? "series"),\(metric)"]
        for (key, points) in series.sorted(by: { $0.key < $1.key }) {
            for point in points { lines.append("\(point.run),\(point.startedAt),\(Self.csvField(key)),\(point.value)") }
        }
        return lines.joined(separator: "\n") + "\n"
    }

    private static func csvField(_ text: String) -> String {
        text.contains(where: { $0 == "," || $0 == "\"" || $0 == "\n" })
            ? "\"" + text.replacingOccurrences(of: "\"", with: "\"\"") + "\"" : text
    }

    /// The chart: x is the run's place in the history, y the value; a polyline and points per series.
    public var html: String {
        let width = 900.0, height = 420.0, left = 90.0, right = 20.0, top = 30.0, bottom = 50.0
        let all = series.values.flatMap { $0 }
        let runs = Set(all.map(\.run)).sorted()
        let position = Dictionary(uniqueKeysWithValues: runs.enumerated().map { ($1, $0) })
        let high = max(all.map(\.value).max() ?? 1, 1e-9) * 1.05
        func x(_ run: Int64) -> Double {
            left + (runs.count > 1 ? Double(position[run]!) / Double(runs.count - 1) : 0.5) * (width - left - right)
        }
        func y(_ value: Double) -> Double { top + (1 - value / high) * (height - top - bottom) }
        let colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
        var svg = ""
        for step in 0...4 {
            let value = high * Double(step) / 4
            svg += "<line x1='\(left)' x2='\(width - right)' y1='\(y(value))' y2='\(y(value))' stroke='#ddd'/>"
            svg += "<text x='\(left - 6)' y='\(y(value) + 4)' text-anchor='end' font-size='11'>\(Self.escape(Self.format(value)))</text>"
        }
        for (index, (key, points)) in series.sorted(by: { $0.key < $1.key }).enumerated() {
            let colour = colours[index % colours.count]
            let path = points.map { "\(x($0.run)),\(y($0.value))" }.joined(separator: " ")
            svg += "<polyline fill='none' stroke='\(colour)' stroke-width='2' points='\(path)'/>"
            for point in points {
                svg +=
                    "<circle cx='\(x(point.run))' cy='\(y(point.value))' r='3' fill='\(colour)'><title>run \(point.run) \(Self.escape(point.startedAt)): \(Self.escape(Self.format(point.value)))</title></circle>"
            }
            if !key.isEmpty {
                svg +=
                    "<text x='\(left + 10 + Double(index) * 140)' y='\(height - 12)' fill='\(colour)' font-size='12'>\(Self.escape(key))</text>"
            }
        }
        svg +=
            "<text x='\(left)' y='18' font-size='13'>\(Self.escape(metric))\(label.map { " by \(Self.escape($0))" } ?? "") over \(runs.count) run(s)</text>"
        return """
            <!doctype html>
            <html><head><meta charset="utf-8"><title>zapfleet trend: \(Self.escape(metric))</title></head>
            <body style="font-family: sans-serif">
            <svg xmlns="http://www.w3.org/2000/svg" width="\(Int(width))" height="\(Int(height))">\(svg)</svg>
            </body></html>

            """
    }

    /// A value as the plot and the check print it: integers whole, large values in 3 digits.
    public static func format(_ value: Double) -> String {
        value >= 1e6 ? String(format: "%.3g", value) : value == value.rounded() ? String(Int(value)) : String(format: "%.4g", value)
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "'", with: "&#39;")
    }
}
