using System.Globalization;

namespace Portcullis.Web.Components;

/// <summary>How the pages write dates: one format everywhere, always UTC and said so.</summary>
internal static class Format
{
    public static string Date(DateTime d) => d.ToString("yyyy-MM-dd HH:mm", CultureInfo.InvariantCulture) + " UTC";

    public static string Day(DateTime d) => d.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture);
}
